"""Parameter sharding (FSDP), bfloat16 compute, and when a run joins a multi-process
cluster."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from helpers import assert_sharded_step_matches, end_to_end_config

from sslx import sharding, train

SIMCLR = "configs/simclr_resnet50.py"


def _losses(workdir: str) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def test_fsdp_equals_one_device_and_trains_end_to_end(npz, tmp_path, monkeypatch):
    """With FSDP the tiny model's larger kernels are split over the 8 devices (the size
    threshold is lowered so that any is); the sharded step still equals one device's,
    and a run trains, checkpoints and embeds for k-NN with the split parameters."""
    monkeypatch.setattr(sharding, "_FSDP_MIN_SIZE", 2**10)
    config = end_to_end_config(SIMCLR, npz, **{"train.param_sharding": "fsdp"})
    run = train.prepare(config, str(tmp_path / "shapes"))
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(run.abstract_state.params)]
    assert sum(sharding.DATA_AXIS in spec for spec in specs) >= 10
    assert_sharded_step_matches(config, tmp_path)

    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    assert results["step"] == 3 and 0 <= results["knn_top1_k5"] <= 1
    assert np.all(np.isfinite(_losses(workdir)))


def test_bfloat16_trains_end_to_end_with_float32_state(npz, tmp_path):
    """bfloat16 compute: finite losses and k-NN, and the parameters and optimizer
    state stay float32 in the checkpoint."""
    workdir = str(tmp_path / "run")
    config = end_to_end_config(SIMCLR, npz, **{"train.dtype": "bfloat16"})
    results = train.train_and_evaluate(config, workdir)
    assert results["step"] == 3 and 0 <= results["knn_top1_k5"] <= 1
    losses = _losses(workdir)
    assert len(losses) == 3 and np.all(np.isfinite(losses))
    state = train.prepare(config, workdir).restore_state()
    dtypes = {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))
              if np.issubdtype(leaf.dtype, np.floating)}
    assert dtypes == {np.dtype(np.float32)}


@pytest.mark.parametrize("env, expected", [
    ({}, False),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"SLURM_NTASKS": "1"}, False),
    ({"SLURM_NTASKS": "4"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t1k-0"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t1k-0,t1k-1"}, True),
])
def test_cluster_detection(env, expected, monkeypatch):
    """`auto` joins a cluster only when the environment names more than one process;
    `off` never does, `on` always (jax.distributed.initialize is replaced here)."""
    for name in sharding._CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append(a))
    assert sharding._in_multiprocess_cluster() is expected
    sharding.maybe_initialize_distributed("auto")
    assert len(calls) == int(expected)
    sharding.maybe_initialize_distributed("off")
    assert len(calls) == int(expected)
    sharding.maybe_initialize_distributed("on")
    assert len(calls) == int(expected) + 1
