"""BYOL: the target gets no gradient, its momentum follows the cosine schedule,
`after_update` is exactly the EMA (sharded runs and resumption: test_conformance.py).

The `check_*` functions also serve MoCo v3, which shares BYOL's EMA target."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from helpers import (
    load_config,
    synthetic_batch,
    tiny_config,
)

from sslx import methods
from sslx.data import pipeline
from sslx.methods.base import TrainLength

RECIPE = "configs/byol_resnet50.py"


def tiny_method(path: str, total_steps: int = 10):
    config = tiny_config(path)
    method = methods.build(config, TrainLength(total_steps=total_steps, steps_per_epoch=5))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = jax.jit(method.init)(jax.random.key(0), batch)
    return method, batch, params, state


def check_target_gets_no_gradient(path: str) -> None:
    """Differentiating the loss with respect to the state (which holds the target)
    gives exact zeros; the online params do get gradient."""
    method, batch, params, state = tiny_method(path)
    rng, step = jax.random.key(1), jnp.asarray(0)
    param_grads, state_grads = jax.jit(jax.grad(
        lambda p, s: method.loss(p, s, batch, rng, step)[0], argnums=(0, 1)))(params, state)
    target_grads = jax.tree.leaves(state_grads["target"]["params"])
    assert target_grads and all(np.all(np.asarray(g) == 0) for g in target_grads)
    for part in ("backbone", "projector", "predictor"):
        assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(param_grads[part]))


def check_target_is_copy_then_ema(path: str, base_momentum: float) -> None:
    """The target starts as the online backbone + projector; after step k it is
    m_k * target + (1 - m_k) * online with m_k = 1 - (1 - base)(cos(pi k/K) + 1)/2."""
    total = 10
    method, _, params, state = tiny_method(path, total_steps=total)
    target = state["target"]
    assert set(target["params"]) == {"backbone", "projector"}
    for a, b in zip(jax.tree.leaves(target["params"]),
                    jax.tree.leaves({k: params[k] for k in ("backbone", "projector")}),
                    strict=True):
        np.testing.assert_array_equal(a, b)

    noise = jax.random.key(2)
    online = jax.tree.map(lambda x: x + jax.random.normal(noise, x.shape), params)
    for step in (0, 3, total):
        m = 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * step / total) + 1) / 2
        new = method.after_update(online, state, jnp.asarray(step))
        for t, o, got in zip(jax.tree.leaves(target["params"]),
                             jax.tree.leaves({k: online[k] for k in ("backbone", "projector")}),
                             jax.tree.leaves(new["target"]["params"]), strict=True):
            np.testing.assert_allclose(got, m * np.asarray(t) + (1 - m) * np.asarray(o),
                                       rtol=1e-6, atol=1e-6)
        # Batch statistics (online and target) come from forward passes, not the EMA.
        for a, b in zip(jax.tree.leaves(new["batch_stats"]),
                        jax.tree.leaves(state["batch_stats"]), strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(jax.tree.leaves(new["target"]["batch_stats"]),
                        jax.tree.leaves(target["batch_stats"]), strict=True):
            np.testing.assert_array_equal(a, b)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x).astype(np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def byol_pair_loss(p: np.ndarray, z: np.ndarray) -> float:
    """Grill et al. eq. 2: mean over the batch of 2 - 2 cos(p, z)."""
    return float(np.mean(2 - 2 * np.sum(unit_rows(p) * unit_rows(z), axis=-1)))


def train_mode_outputs(module, variables, views) -> list[dict]:
    """The module on each view in its own train-mode call (its own BatchNorm batch)."""
    return [jax.device_get(module.apply(variables, view, train=True, mutable=["batch_stats"])[0])
            for view in views]


def check_loss_pairs_predictions_with_target_projections_of_the_other_view(
        path: str, pair_loss) -> None:
    """loss = pair_loss(q(v1), z'(v2)) + pair_loss(q(v2), z'(v1)): q the online network's
    predictions, z' the target network's projections, each network applied here view by
    view. The target is moved away from the online weights first, so a loss that used
    the online projections, or the same view's, would differ."""
    method, batch, params, state = tiny_method(path)
    leaves, tree = jax.tree.flatten(state["target"]["params"])
    keys = jax.random.split(jax.random.key(3), len(leaves))
    target_params = tree.unflatten([
        x + 0.5 * jnp.std(x) * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys,
                                                                            strict=True)])
    target = {**state["target"], "params": target_params}
    state = {**state, "target": target}
    loss, _ = method.loss(params, state, batch, jax.random.key(1), jnp.asarray(0))

    online = train_mode_outputs(method.network(), {"params": params,
                                                 "batch_stats": state["batch_stats"]},
                                batch["views"])
    targets = train_mode_outputs(method.teacher_network(), target, batch["views"])
    q = [out["prediction"] for out in online]
    z = [out["projection"] for out in targets]
    np.testing.assert_allclose(loss, pair_loss(q[0], z[1]) + pair_loss(q[1], z[0]), rtol=1e-5)
    # The check can tell the target from the online network and one view from the other.
    z_online = [out["projection"] for out in online]
    assert abs(pair_loss(q[0], z_online[1]) - pair_loss(q[0], z[1])) > 1e-3
    assert abs(pair_loss(q[0], z[0]) - pair_loss(q[0], z[1])) > 1e-3


def check_recipes_build(paths: list[str]) -> None:
    """Each recipe and its `:runlocal` pass the method's config checks and build
    their networks (shapes only: nothing compiles)."""
    for path in paths:
        for arg in (None, "runlocal"):
            config = load_config(path, arg)
            method = methods.build(config, TrainLength(total_steps=100, steps_per_epoch=10))
            method.check_config()
            batch = pipeline.example_batch(method.spec, 2, inputs=method.inputs)
            params, _ = jax.eval_shape(method.init, jax.random.key(0), batch)
            assert {"backbone", "projector", "predictor"} <= set(params)


def momentum_at(path: str, total_steps: int, steps: tuple[int, ...]) -> list[float]:
    method = methods.build(load_config(path), TrainLength(total_steps, steps_per_epoch=10))
    return [float(method.teacher.momentum(jnp.asarray(s))) for s in steps]


def test_recipes_build():
    check_recipes_build([RECIPE, "configs/byol_resnet18_cifar10.py"])


def test_target_gets_no_gradient():
    check_target_gets_no_gradient(RECIPE)


def test_heads_end_in_a_bias_free_dense():
    """`networks.MLP`: Linear(with bias) - BN - ReLU - Linear(with_bias=False); the
    first bias is BN's shift here."""
    _, _, params, state = tiny_method(RECIPE)
    for head in ("projector", "predictor"):
        assert set(params[head]) == {"dense0", "bn0", "dense1"}
        assert set(params[head]["dense1"]) == {"kernel"}
    assert set(state["target"]["params"]["projector"]["dense1"]) == {"kernel"}


def test_loss_pairs_predictions_with_target_projections_of_the_other_view():
    check_loss_pairs_predictions_with_target_projections_of_the_other_view(RECIPE,
                                                                           byol_pair_loss)


def test_target_is_copy_then_ema():
    check_target_is_copy_then_ema(RECIPE, base_momentum=0.996)


def test_momentum_schedule_start_middle_end():
    np.testing.assert_allclose(momentum_at(RECIPE, 1000, (0, 500, 1000, 1200)),
                               [0.996, 0.998, 1.0, 1.0], rtol=0, atol=1e-7)


def test_loss_logs_momentum_and_updates_target_batch_stats():
    method, batch, params, state = tiny_method(RECIPE)
    loss, (new_state, metrics) = method.loss(params, state, batch, jax.random.key(1),
                                             jnp.asarray(0))
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(metrics["momentum"], 0.996, rtol=1e-6)
    assert 0 < float(metrics["embedding_std"]) <= 1
    moved = [not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(new_state["target"]["batch_stats"]),
        jax.tree.leaves(state["target"]["batch_stats"]), strict=True)]
    assert any(moved)
