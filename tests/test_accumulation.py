"""Gradient accumulation (`config.train.accumulation_steps`): the global batch as
microbatches inside the jitted step, then one update. Exact where the loss is a
mean of independent per-example terms (the supervised ViT here: one step with 2 or
4 microbatches equals the step on the whole batch, on 8 devices); refused before
anything compiles, naming the reason, wherever it would change the objective."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from helpers import SMALL_BACKBONE, method_recipe, synthetic_batch, tiny_config

from sslx import config_checks, methods, sharding, train
from sslx.errors import ConfigError

SUPERVISED_VIT = "configs/supervised_vits16.py"
# A 2-block ViT-T/4 with neither stochastic depth nor mixing, so nothing in the step
# is drawn per microbatch; batch 32 is 4 images per device, which splits 2 or 4 ways.
# SGD, whose update is linear in the gradient, so the params after the step show the
# gradients' agreement (Adam's first step, lr g / (|g| + eps), blows the rounding of
# the tiniest gradients up to a share of the lr).
EXACT = {**SMALL_BACKBONE, "model.drop_path": 0.0, "method.mixup_alpha": 0.0,
         "method.cutmix_alpha": 0.0, "train.batch_size": 32, "optim.name": "sgd"}
# The methods whose loss is a mean of per-example terms: the only ones that accumulate.
PER_EXAMPLE = {"supervised", "mae", "rotation", "jigsaw", "colorization"}
NUM_DEVICES = 8  # tests/conftest.py


def _one_step(npz: str, workdir: str, steps: int) -> dict:
    """Loss and gradients at the initial state (the step's own gradient function),
    then one step of `train.make_train_step`: its metrics and the state after it."""
    config = tiny_config(SUPERVISED_VIT, npz=npz,
                         **{**EXACT, "train.accumulation_steps": steps})
    run = train.prepare(config, workdir, mesh=sharding.make_mesh(jax.devices()))
    state = run.init_state()
    batch = sharding.global_batch(synthetic_batch(config), run.mesh)
    grad_fn = (jax.value_and_grad(run.method.loss, has_aux=True) if steps == 1
               else train.accumulated_value_and_grad(run, steps))
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, (_, metrics)), grads = jax.device_get(jax.jit(grad_fn)(
        state.params, state.method_state, batch, rng, state.step))
    final, step_metrics = train.make_train_step(run)(state, batch)
    return {"loss": loss, "metrics": metrics, "grads": grads,
            "step_metrics": jax.device_get(step_metrics), "final": jax.device_get(final)}


@pytest.fixture(scope="module")
def whole_batch(npz, tmp_path_factory):
    """The step without accumulation, the reference of every accumulated one."""
    return _one_step(npz, str(tmp_path_factory.mktemp("k1")), 1)


def _assert_close(got, want, what: str) -> None:
    """Leaf by leaf at rtol 1e-5, atol 1e-6."""
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want),
                            strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{what}{jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("steps", [2, 4])
def test_accumulated_step_equals_the_whole_batch_step(steps, whole_batch, npz, tmp_path):
    got = _one_step(npz, str(tmp_path / "run"), steps)
    _assert_close(got["loss"], whole_batch["loss"], "loss")
    _assert_close(got["metrics"], whole_batch["metrics"], "metrics")
    _assert_close(got["grads"], whole_batch["grads"], "gradient")
    _assert_close(got["step_metrics"], whole_batch["step_metrics"], "step metrics")
    for part in ("params", "opt_state", "method_state"):
        _assert_close(getattr(got["final"], part), getattr(whole_batch["final"], part), part)
    assert int(got["final"].step) == 1


def test_the_per_example_methods():
    """A method accumulates only by declaring its loss per-example (`batch_level_loss`
    None); a new one inherits the refusal."""
    assert {name for name in methods.names()
            if methods.lookup(name).batch_level_loss is None} == PER_EXAMPLE


def _check(config) -> None:
    config_checks.check_run(config, num_devices=NUM_DEVICES, process_count=1)


def _refusal(name: str, reason: str) -> str:
    return re.escape(f"config.train.accumulation_steps=2: method {name!r} {reason}, so "
                     "accumulating microbatches would change its objective; use "
                     "accumulation_steps=1 (or a larger slice)")


@pytest.mark.parametrize("name", methods.names())
def test_refused_where_the_objective_would_change(name):
    config = tiny_config(method_recipe(name), **SMALL_BACKBONE,
                         **{"train.accumulation_steps": 2})
    reason = methods.lookup(name).batch_level_loss
    if reason is None:
        _check(config)  # per-example on a ViT: allowed
    else:
        with pytest.raises(ConfigError, match=_refusal(name, reason)):
            _check(config)


@pytest.mark.parametrize("name", sorted(PER_EXAMPLE))
def test_refused_on_a_batch_norm_backbone(name):
    config = tiny_config(method_recipe(name), **{"model.name": "resnet18",
                                                 "train.accumulation_steps": 2})
    reason = "runs on config.model.name='resnet18', whose BatchNorm normalises over the batch"
    with pytest.raises(ConfigError, match=_refusal(name, reason)):
        _check(config)


def test_batch_that_does_not_split_is_refused_before_anything_is_built(npz, tmp_path):
    config = tiny_config(SUPERVISED_VIT, npz=npz, **{**EXACT, "train.batch_size": 16,
                                                     "train.accumulation_steps": 4})
    with pytest.raises(ConfigError, match=re.escape(
            "config.train.accumulation_steps=4: the 2 images of each of the 8 devices "
            "(config.train.batch_size=16) do not split into 4 microbatches; make "
            "config.train.batch_size a multiple of 32, or accumulation_steps a divisor of 2")):
        train.prepare(config, str(tmp_path), mesh=sharding.make_mesh(jax.devices()))


@pytest.mark.parametrize("steps", [0, -2])
def test_accumulation_steps_is_a_positive_integer(steps):
    config = tiny_config(SUPERVISED_VIT, **{"train.accumulation_steps": steps})
    with pytest.raises(ConfigError, match=r"config\.train\.accumulation_steps=.* must be an "
                                          r"integer >= 1"):
        _check(config)


def test_batch_norm_statistics_are_refused_by_the_step_itself(npz, tmp_path):
    """Whatever a method declares, a state holding BatchNorm statistics does not
    accumulate: its normalisation is over each microbatch."""
    config = tiny_config("configs/supervised_resnet50.py", npz=npz,
                         **{"model.name": "resnet18"})
    run = train.prepare(config, str(tmp_path), mesh=sharding.make_mesh(jax.devices()))
    with pytest.raises(ConfigError, match="keeps BatchNorm statistics"):
        train.accumulated_value_and_grad(run, 2)
