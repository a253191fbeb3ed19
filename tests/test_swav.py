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


def test_head_sees_all_crops_in_one_batchnorm_batch():
    """The official `forward_head(torch.cat(features))`: the projector's BatchNorm
    normalises the 2 global and the local crops together; heads run per crop size
    would give other scores, hence another loss."""
    method, params, state, batch = build(**{"method.queue_length": 0})
    assert len({view.shape[1] for view in batch["views"]}) == 2  # two crop sizes
    loss, (new_state, _) = loss_of(method, params, state, batch, 0)
    scores = [o["scores"] for o in method_scores(method, params, state, batch)]
    np.testing.assert_allclose(loss, losses.swav_loss(scores, num_assign_crops=2), rtol=1e-5)
    per_size, _ = forward(method.network(), params, state["batch_stats"], batch["views"],
                          train=True)
    other = losses.swav_loss([o["scores"] for o in per_size], num_assign_crops=2)
    assert abs(float(other) - float(loss)) > 1e-4
    assert set(new_state["batch_stats"]) == {"backbone", "projector"}


def test_prototypes_are_unit_rows_after_every_update_and_their_gradient_is_not_projected():
    """As the official code rewrites the prototypes to unit rows before each forward:
    the loss uses the stored rows, so their gradient keeps its radial part, and
    `project` (run by the trainer after each update) restores unit rows."""
    method, params, state, batch = build(**{"method.queue_length": 0})
    grads = jax.grad(lambda p: loss_of(method, p, state, batch, 0)[0])(params)
    rows, grad = params["prototypes"]["prototypes"], grads["prototypes"]["prototypes"]
    np.testing.assert_allclose(np.linalg.norm(rows, axis=-1), 1.0, rtol=1e-6)
    radial = np.sum(np.asarray(rows) * np.asarray(grad), axis=-1)
    assert np.abs(radial).max() > 1e-3 * np.linalg.norm(grad, axis=-1).max()
    stepped = jax.tree.map(lambda w, g: w - 0.5 * g, params, grads)
    projected = method.project(stepped)
    np.testing.assert_allclose(
        np.linalg.norm(projected["prototypes"]["prototypes"], axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(projected["prototypes"]["prototypes"],
                               unit_rows(stepped["prototypes"]["prototypes"]), rtol=1e-6)
    for part in ("backbone", "projector"):
        assert jax.tree.all(jax.tree.map(np.array_equal, projected[part], stepped[part]))


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
        queue_scores=jnp.einsum("aqd,kd->aqk", noisy["queue"], params["prototypes"]["prototypes"]))
    np.testing.assert_allclose(used, expected, rtol=1e-5)


def unit_rows(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def method_scores(method, params, state, batch):
    """Outputs per crop, computed here: the backbone on each crop size's views, then
    the heads once on every crop's features."""
    network, variables = method.network(), {"params": params, "batch_stats": state["batch_stats"]}
    features = {}
    for size in sorted({view.shape[1] for view in batch["views"]}):
        same = [i for i, view in enumerate(batch["views"]) if view.shape[1] == size]
        out, _ = network.apply(variables, jnp.concatenate([batch["views"][i] for i in same]),
                               train=True, features_only=True, mutable=["batch_stats"])
        features.update(zip(same, jnp.split(out["features"], len(same)), strict=True))
    heads, _ = network.apply(variables, jnp.concatenate([features[i] for i in sorted(features)]),
                             train=True, from_features=True, mutable=["batch_stats"])
    b = len(batch["views"][0])
    return [{key: value[i * b:(i + 1) * b] for key, value in heads.items()}
            for i in range(len(features))]

