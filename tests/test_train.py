"""The training loop: sharded equals unsharded, checkpoints resume, export writes arrays."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from helpers import small_fmnist_npz, tiny_config

from sslx import sharding, train

RECIPES = ["configs/simclr_resnet50.py"]


def _synthetic_batch(config, seed=0):
    rng = np.random.default_rng(seed)
    example = train.example_batch(config, config.train.batch_size)
    return {
        "views": tuple(rng.normal(size=v.shape).astype(np.float32) for v in example["views"]),
        "label": np.arange(config.train.batch_size, dtype=np.int32) % 10,
    }


def _two_steps(config, workdir, devices):
    run = train.prepare(config, workdir, mesh=sharding.make_mesh(devices))
    state = run.init_state()
    step = train.make_train_step(run)
    batch = _synthetic_batch(config)
    losses = []
    for _ in range(2):
        state, metrics = step(state, sharding.global_batch(batch, run.mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get((state.params, state.method_state))


@pytest.mark.parametrize("recipe", RECIPES)
def test_step_on_8_devices_equals_1_device(recipe, tmp_path):
    config = tiny_config(recipe)
    losses_1, state_1 = _two_steps(config, str(tmp_path / "one"), jax.devices()[:1])
    losses_8, state_8 = _two_steps(config, str(tmp_path / "eight"), jax.devices()[:8])
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(state_8), jax.tree.leaves(state_1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return small_fmnist_npz(str(tmp_path_factory.mktemp("data") / "fmnist_small.npz"))


def _logged_steps(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if "loss" in line]


def test_train_resumes_and_exports(npz, tmp_path):
    workdir = str(tmp_path / "run")
    first = train.train_and_evaluate(tiny_config(npz=npz, **{"eval.knn": False}), workdir)
    assert first["step"] == 2
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))

    resumed = train.train_and_evaluate(tiny_config(npz=npz, **{"train.steps": 4}), workdir)
    assert resumed["step"] == 4
    assert _logged_steps(workdir) == [1, 2, 3, 4]
    assert 0.0 <= resumed["knn_top1_k5"] <= 1.0

    exported = train.export(tiny_config(npz=npz, **{"train.steps": 4}), workdir, "train")
    features = np.load(exported["embeddings"]["features"])
    labels = np.load(exported["embeddings"]["labels"])
    assert features.shape == (256, 64) and features.dtype == np.float32
    assert labels.shape == (256,)
    with open(exported["embeddings"]["info"]) as f:
        info = json.load(f)
    assert info["step"] == 4 and info["split"] == "train" and info["method"]["name"] == "simclr"


def test_finished_run_is_not_retrained(npz, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(npz=npz, **{"eval.knn": False})
    train.train_and_evaluate(config, workdir)
    again = train.train_and_evaluate(config, workdir)
    assert again["step"] == 2
    assert _logged_steps(workdir) == [1, 2]
