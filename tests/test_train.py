"""The training loop: sharded equals unsharded, checkpoints resume, export writes arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import (
    assert_sharded_step_matches,
    assert_trains_and_resumes,
    logged_steps,
    small_fmnist_npz,
    tiny_config,
)

from sslx import train


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return small_fmnist_npz(str(tmp_path_factory.mktemp("data") / "fmnist_small.npz"))


def test_simclr_step_on_8_devices_equals_1_device(tmp_path):
    assert_sharded_step_matches(tiny_config("configs/simclr_resnet50.py"), tmp_path)


def test_train_resumes_and_exports(npz, tmp_path):
    workdir = str(tmp_path / "run")
    assert_trains_and_resumes("configs/simclr_resnet50.py", npz, workdir)
    exported = train.export(tiny_config(npz=npz, **{"train.steps": 3}), workdir, "train")
    features = np.load(exported["embeddings"]["features"])
    labels = np.load(exported["embeddings"]["labels"])
    assert features.shape == (256, 64) and features.dtype == np.float32
    assert labels.shape == (256,)
    with open(exported["embeddings"]["info"]) as f:
        info = json.load(f)
    assert info["step"] == 3 and info["split"] == "train" and info["method"]["name"] == "simclr"


def test_finished_run_is_not_retrained(npz, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(npz=npz, **{"eval.knn": False})
    train.train_and_evaluate(config, workdir)
    again = train.train_and_evaluate(config, workdir)
    assert again["step"] == 2
    assert logged_steps(workdir) == [1, 2]
