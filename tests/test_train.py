"""The training loop: sharded equals unsharded, checkpoints resume, export writes arrays."""

from __future__ import annotations

import json

import jax
import numpy as np
from helpers import (
    assert_sharded_step_matches,
    assert_trains_and_resumes,
    end_to_end_config,
    logged_steps,
    preempted_after,
)

from sslx import train
from sslx.evaluators.export import read_embeddings

SIMCLR = "configs/simclr_resnet50.py"
QUIET = {"evals.knn.enabled": False, "eval.export_at_end": False}


def test_simclr_step_on_8_devices_equals_1_device(npz, tmp_path):
    assert_sharded_step_matches(end_to_end_config(SIMCLR, npz), tmp_path)


def test_train_resumes_and_exports(npz, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    assert_trains_and_resumes(SIMCLR, npz, workdir, capsys)
    exported = train.export(end_to_end_config(SIMCLR, npz), workdir, "train")
    assert exported["embeddings"] == {"index": f"{workdir}/embeddings/train/index.json"}
    features, labels = read_embeddings(exported["embeddings"]["index"])
    assert features.shape == (256, 64) and features.dtype == np.float32
    assert labels.shape == (256,) and (labels >= 0).all()
    with open(exported["embeddings"]["index"]) as f:
        info = json.load(f)
    assert info["step"] == 3 and info["split"] == "train" and info["method"]["name"] == "simclr"


def test_resume_equals_uninterrupted(npz, tmp_path):
    config = end_to_end_config(SIMCLR, npz, **QUIET)
    train.train_and_evaluate(config, str(tmp_path / "straight"))
    # A finished run is not retrained.
    assert train.train_and_evaluate(config, str(tmp_path / "straight"))["step"] == 3
    assert logged_steps(str(tmp_path / "straight")) == [1, 2, 3]
    # Speed from the second step on (the first compiles): images/s and the share of
    # the time spent waiting for input.
    with open(tmp_path / "straight" / "metrics.jsonl") as f:
        speed = [line for line in map(json.loads, f) if "input_wait" in line]
    assert [line["step"] for line in speed] == [2, 3]
    assert all(0 <= line["input_wait"] <= 1 and line["images_per_sec"] > 0 for line in speed)

    with preempted_after(2):
        assert train.train_and_evaluate(config, str(tmp_path / "resumed")) == {
            "step": 2, "preempted": True}
    assert train.train_and_evaluate(config, str(tmp_path / "resumed"))["step"] == 3

    straight = train.prepare(config, str(tmp_path / "straight")).restore_state()
    resumed = train.prepare(config, str(tmp_path / "resumed")).restore_state()
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
