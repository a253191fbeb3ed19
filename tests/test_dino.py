"""DINO: loss over pairs of different crops, no gradient into the teacher, the
center and schedules, the frozen last layer (sharded runs and resumption:
test_conformance.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import (
    end_to_end_config,
    load_config,
    method_recipe,
    reference_steps,
    synthetic_batch,
    tiny_config,
)

from sslx import methods
from sslx.methods.base import TrainLength

RECIPE = "configs/dino_vits16.py"
RECIPES = ["configs/dino_vits16.py", "configs/dino_vitb.py", "configs/dino_vits8.py",
           "configs/dino_resnet50.py", "configs/ibot_vits16.py"]


def _method(config, length: TrainLength | None = None):
    method = methods.build(config, length or TrainLength(total_steps=100, steps_per_epoch=10))
    method.check_config()
    return method


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("path", RECIPES)
def test_recipes_load_and_check(path):
    for arg in (None, "runlocal"):
        config = load_config(path, arg)
        _method(config).check_config()
        assert config.optim.frozen.last_layer == (1.0 if arg is None else 0.02)
    full = load_config(path)
    assert full.views.global_crops.count == 2 and full.views.global_crops.size == 224
    assert full.views.local_crops.size == 96


def test_loss_is_over_different_crops_and_teacher_gets_no_gradient():
    # No drop-path: the student's outputs are then a plain function of the params.
    config = tiny_config(RECIPE, **{"model.drop_path": 0.0})
    method = _method(config)
    batch = jax.tree.map(np.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    step = 3
    loss_fn = jax.jit(method.loss)
    loss, (new_state, metrics) = loss_fn(params, state, batch, jax.random.PRNGKey(1), step)

    # Independent reference: logits of every crop, then the mean over pairs
    # (teacher crop i, student crop v) with v != i. At init the teacher is the student.
    network = method.network()
    apply = jax.jit(lambda v: network.apply({"params": params}, v, train=False)["projection"])
    logits = [np.asarray(apply(v)) for v in batch["views"]]
    center = np.asarray(state["center"])
    temp = float(method.teacher_temp(step))
    terms = []
    for i in range(2):
        t = _log_softmax((logits[i] - center) / temp)
        q = np.exp(t)
        for v in range(len(logits)):
            if v != i:
                terms.append(np.mean(-np.sum(q * _log_softmax(logits[v] / 0.1), axis=-1)))
    assert len(terms) == 2 * (len(logits) - 1)
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
    np.testing.assert_allclose(metrics["teacher_temp"], temp)

    # Center: momentum 0.9 towards the mean teacher output over both global crops.
    want = 0.9 * center + 0.1 * np.concatenate(logits[:2]).mean(axis=0)
    np.testing.assert_allclose(new_state["center"], want, rtol=1e-5, atol=1e-6)

    grads = jax.jit(jax.grad(
        lambda s: method.loss(params, s, batch, jax.random.PRNGKey(1), step)[0]))(state)
    for leaf in jax.tree.leaves(grads["teacher"]):
        assert not np.any(leaf)


def test_schedules():
    config = load_config(RECIPE)
    method = _method(config, TrainLength(total_steps=1000, steps_per_epoch=4))
    # Teacher temperature np.linspace(0.04, 0.07, 30)[epoch] over 30 epochs (120 steps),
    # once per epoch, then constant.
    temps = [float(method.teacher_temp(s)) for s in (0, 3, 4, 58, 116, 120, 999)]
    np.testing.assert_allclose(temps, [0.04, 0.04, 0.04 + 0.03 / 29, 0.04 + 0.03 * 14 / 29,
                                       0.07, 0.07, 0.07], rtol=1e-6)
    config.method.teacher_temp_per_epoch = False  # a per-step ramp (`:runlocal`)
    method = _method(config, TrainLength(total_steps=1000, steps_per_epoch=4))
    temps = [float(method.teacher_temp(s)) for s in (0, 60, 120, 999)]
    np.testing.assert_allclose(temps, [0.04, 0.055, 0.07, 0.07], rtol=1e-6)
    # Teacher momentum 0.996 -> 1 along a half cosine.
    momenta = [float(method.target.momentum(s)) for s in (0, 500, 1000)]
    np.testing.assert_allclose(momenta, [0.996, 0.998, 1.0], rtol=1e-7)


def test_first_epoch_trains_the_head_but_not_its_last_layer(npz, tmp_path):
    # Recipes freeze it for one epoch (`:runlocal` scales that to its length).
    assert load_config(method_recipe("dino")).optim.frozen.last_layer == 1.0
    config = end_to_end_config(method_recipe("dino"), npz, **{"optim.frozen.last_layer": 1.0})
    result = reference_steps(config, str(tmp_path), jax.devices()[:1])
    init, final = result.init.params["projector"], result.final.params["projector"]
    np.testing.assert_array_equal(final["last_layer"]["v"], init["last_layer"]["v"])
    assert any(not np.allclose(a, b) for a, b in zip(
        jax.tree.leaves(init["mlp"]), jax.tree.leaves(final["mlp"]), strict=True))
    assert not np.allclose(result.final.method_state["center"], 0.0)
