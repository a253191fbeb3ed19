"""The online linear probe: its SGD step against numpy, the self-supervised update
unchanged by it, 8 devices equal 1, and a run that is preempted, resumes to the
uninterrupted run's state and reports the probe's eval-split accuracy."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import (
    SMALL_BACKBONE,
    assert_tree_close,
    end_to_end_config,
    preempt_cli,
    resume_cli,
    trainer_steps,
)

from sslx import evaluators, online_probe, train
from sslx.errors import ConfigError

RECIPE = "configs/simclr_resnet50.py"
PROBE = {**SMALL_BACKBONE, "online_probe.num_classes": 10}


def test_probe_step_is_sgd_on_the_labelled_rows():
    config = ml_collections.ConfigDict({**online_probe.DEFAULTS, "num_classes": 3})
    probe = online_probe.OnlineProbe(config, feature_dim=4)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 2, 1, -1, 2, -1], np.int32)
    state, metrics = jax.jit(probe.update)(probe.init(), jnp.asarray(features),
                                           jnp.asarray(labels))
    kept = labels >= 0
    onehot = np.eye(3)[labels[kept]]
    # Zero weights: uniform softmax; the first momentum step is the gradient times lr.
    grad_kernel = features[kept].T @ (np.full_like(onehot, 1 / 3) - onehot) / kept.sum()
    grad_bias = (np.full_like(onehot, 1 / 3) - onehot).mean(0)
    np.testing.assert_allclose(state["params"]["kernel"], -0.1 * grad_kernel, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(state["params"]["bias"], -0.1 * grad_bias, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["probe_loss"], np.log(3), rtol=1e-6)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("num_classes", 1, r"online_probe\.num_classes=1 must be 0"),
    ("lr", 0.0, r"online_probe\.lr=0\.0 must be > 0"),
    ("momentum", 1.0, r"online_probe\.momentum=1\.0 must be in \[0, 1\)"),
])
def test_bad_probe_settings_are_refused(field, value, match, npz, tmp_path):
    config = end_to_end_config(RECIPE, npz, **{**PROBE, f"online_probe.{field}": value})
    with pytest.raises(ConfigError, match=match):
        train.prepare(config, str(tmp_path))


def test_probe_leaves_the_self_supervised_step_unchanged_and_8_devices_equal_1(npz, tmp_path):
    with_probe = end_to_end_config(RECIPE, npz, **PROBE)
    without = end_to_end_config(RECIPE, npz, **SMALL_BACKBONE)
    devices = jax.devices()
    eight = trainer_steps(with_probe, str(tmp_path / "eight"), devices)
    plain = trainer_steps(without, str(tmp_path / "plain"), devices)
    for part in ("params", "opt_state", "method_state"):
        assert_tree_close(getattr(eight.final, part), getattr(plain.final, part), part,
                          rtol=1e-6)
    for got, want in zip(eight.metrics, plain.metrics, strict=True):
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
        assert 0 <= got["probe_top1"] <= 1 and np.isfinite(got["probe_loss"])
    assert plain.final.probe is None
    one = trainer_steps(with_probe, str(tmp_path / "one"), devices[:1])
    assert_tree_close(eight.final.probe, one.final.probe, "probe", rtol=1e-4)
    changed = np.abs(np.asarray(eight.final.probe["params"]["kernel"])).sum()
    assert changed > 0


def test_run_with_a_probe_resumes_as_it_trains_straight_and_reports_it(npz, tmp_path, capsys):
    overrides = {**PROBE, "evals.online_probe.enabled": True}
    workdir = str(tmp_path / "resumed")
    preempt_cli(RECIPE, npz, workdir, capsys, **overrides)
    resume_cli(RECIPE, npz, workdir, capsys, **overrides)
    config = end_to_end_config(RECIPE, npz, **overrides)
    straight = str(tmp_path / "straight")
    results = train.train_and_evaluate(config, straight)
    assert 0 <= results["online_probe_top1"] <= results["online_probe_top5"] <= 1
    resumed_state = train.prepare(config, workdir).restore_state()
    straight_state = train.prepare(config, straight).restore_state()
    assert_tree_close(resumed_state.probe, straight_state.probe, "probe", rtol=1e-6)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert all("probe_top1" in r for r in records if "loss" in r)
    assert any("online_probe_top1" in r for r in records)


def test_probe_evaluator_needs_the_probe(npz, tmp_path):
    run = train.prepare(end_to_end_config(RECIPE, npz, **SMALL_BACKBONE), str(tmp_path))
    with pytest.raises(ConfigError, match=r"config\.online_probe\.num_classes=0 leaves out"):
        evaluators.build("online_probe", evaluators.default_config("online_probe"), run)
