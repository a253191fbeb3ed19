"""SwAV: prototypes normalised in the forward, codes without gradient, the FIFO
queue and its start (the recipe's run, sharded with its queue in use and resumed:
test_conformance.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from helpers import synthetic_batch, tiny_config

from sslx import losses, methods
from sslx.methods.base import TrainLength
from sslx.methods.common import forward
from sslx.methods.swav import push
from sslx.models.heads import normalize_prototypes

RECIPE = "configs/swav_resnet50.py"


def build(steps_per_epoch: int = 10, **overrides):
    config = tiny_config(RECIPE, **{"method.num_prototypes": 12, "method.projector_dim": 8,
                                    "method.projector_hidden_dim": 16, **overrides})
    method = methods.build(config, TrainLength(total_steps=100, steps_per_epoch=steps_per_epoch))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    return method, params, state, batch


def loss_of(method, params, state, batch, step):
    return method.loss(params, state, batch, jax.random.PRNGKey(1), jnp.asarray(step))


def test_loss_is_invariant_to_prototype_scale():
    method, params, state, batch = build(**{"method.queue_length": 0})
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 7.0 if path[-1].key == "prototypes" else x, params)
    np.testing.assert_allclose(loss_of(method, scaled, state, batch, 0)[0],
                               loss_of(method, params, state, batch, 0)[0], rtol=1e-5)


def test_codes_carry_no_gradient():
    """dL/ds_v = (softmax(s_v/τ) - q)/(τ B) averaged over pairs: the Sinkhorn
    codes q are constants, so the assigned crops' own scores get no extra term."""
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.normal(size=(2, 6, 5)).astype(np.float32))
    tau = 0.1
    grad = jax.grad(lambda s: losses.swav_loss(s, num_assign_crops=2, temperature=tau))(scores)
    codes = [losses.sinkhorn(scores[i]) for i in range(2)]
    expected = [(jax.nn.softmax(scores[v] / tau) - codes[1 - v]) / (tau * 6) / 2
                for v in range(2)]
    np.testing.assert_allclose(grad, np.stack(expected), rtol=1e-4, atol=1e-6)


def test_queue_is_fifo():
    queue = jnp.arange(2 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 1)
    new = -jnp.ones((2, 3, 1))
    out = push(queue, new)
    np.testing.assert_array_equal(out[0, :, 0], [-1, -1, -1, 0])
    np.testing.assert_array_equal(out[1, :, 0], [-1, -1, -1, 4])
    np.testing.assert_array_equal(push(queue, -jnp.ones((2, 6, 1))), -jnp.ones((2, 4, 1)))


def test_queue_fills_from_its_start_and_is_used_once_full():
    # batch 16, queue 32: filled at steps 5 and 6, used from step 7.
    method, params, state, batch = build(**{"method.queue_length": 32,
                                            "method.queue_start_epoch": 0.5})
    assert state["queue"].shape == (2, 32, 8)
    before, (new_state, metrics) = loss_of(method, params, state, batch, 4)
    np.testing.assert_array_equal(new_state["queue"], 0.0)
    assert metrics["queue_in_use"] == 0.0
    _, (new_state, metrics) = loss_of(method, params, state, batch, 5)
    filled = new_state["queue"]
    assert metrics["queue_in_use"] == 0.0
    np.testing.assert_allclose(np.linalg.norm(filled[:, :16], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(filled[:, 16:], 0.0)
    # Not yet full: the loss ignores the (random) queue.
    noisy = {**state, "queue": jax.random.normal(jax.random.PRNGKey(2), state["queue"].shape)}
    np.testing.assert_allclose(loss_of(method, params, noisy, batch, 6)[0], before, rtol=1e-6)
    used, (_, metrics) = loss_of(method, params, noisy, batch, 7)
    assert metrics["queue_in_use"] == 1.0
    assert abs(float(used) - float(before)) > 1e-4
    expected = losses.swav_loss(
        [o["scores"] for o in method_scores(method, params, state, batch)], num_assign_crops=2,
        queue_scores=jnp.einsum("aqd,kd->aqk", noisy["queue"],
                                unit_rows(params["prototypes"]["prototypes"])))
    np.testing.assert_allclose(used, expected, rtol=1e-5)


def unit_rows(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def method_scores(method, params, state, batch):
    outputs, _ = forward(method.network(), normalize_prototypes(params), state["batch_stats"],
                         batch["views"], train=True, rng=jax.random.PRNGKey(1))
    return outputs

