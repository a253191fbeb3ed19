"""NNCLR: the FIFO support set, the loss the method computes from its networks
and queue (sharded runs and resumption: test_conformance.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    synthetic_batch,
    tiny_config,
)
from scipy.special import logsumexp

from sslx import methods
from sslx.errors import ConfigError
from sslx.methods.base import TrainLength
from sslx.methods.nnclr import enqueue

RECIPE = "configs/nnclr_resnet50.py"


def test_enqueue_is_fifo_and_wraps():
    queue, pointer = jnp.zeros((5, 2)), jnp.int32(0)
    for i in range(3):
        queue, pointer = enqueue(queue, pointer, jnp.full((2, 2), i + 1.0))
    # Rows 0-1 <- 1, rows 2-3 <- 2, then row 4 and (wrapping) row 0 <- 3.
    np.testing.assert_array_equal(queue[:, 0], [3, 1, 2, 2, 3])
    assert int(pointer) == 1


def _unit(x) -> np.ndarray:
    x = np.asarray(x).astype(np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _nnclr_side(z: np.ndarray, p: np.ndarray, queue: np.ndarray, temperature: float) -> float:
    """Dwibedi et al. eq. 2-3: the positive of image i is the unit queue row most similar
    to z_i; logits against every image's unit prediction p_j / tau, positive at j = i."""
    support = _unit(queue)
    neighbours = support[np.argmax(_unit(z) @ support.T, axis=1)]
    logits = neighbours @ _unit(p).T / temperature
    return float(np.mean(logsumexp(logits, axis=1) - np.diag(logits)))


def test_loss_looks_up_the_queue_then_enqueues_the_first_view():
    """Outputs computed here, view by view; the support set holds the batch's own first-view
    projections (shuffled) and 8 random rows, every other one stored with a wrong label,
    so each first view is its own neighbour and `nn_same_label` is exactly 1/2."""
    config = tiny_config(RECIPE, **{"method.queue_size": 24})
    method = methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    np.testing.assert_allclose(jnp.linalg.norm(state["queue"], axis=-1), 1.0, rtol=1e-5)
    variables = {"params": params, "batch_stats": state["batch_stats"]}
    (z_a, p_a), (z_b, p_b) = (
        (np.asarray(out["projection"]), np.asarray(out["prediction"])) for out in (
            method.network().apply(variables, view, train=True, mutable=["batch_stats"])[0]
            for view in batch["views"]))

    rng = np.random.default_rng(0)
    order = rng.permutation(16)
    labels = np.asarray(batch["label"])
    stored = np.where(np.arange(16) % 2 == 0, labels[order], (labels[order] + 1) % 10)
    queue = np.concatenate([_unit(z_a)[order], np.asarray(state["queue"][16:])])
    state = {**state, "queue": jnp.asarray(queue, jnp.float32),
             "queue_labels": jnp.asarray(np.concatenate([stored, np.full(8, 3)]), jnp.int32)}
    loss_fn = jax.jit(method.loss)
    loss, (new_state, metrics) = loss_fn(params, state, batch, jax.random.PRNGKey(1), 0)

    temperature = config.method.temperature
    expected = 0.5 * (_nnclr_side(z_a, p_b, queue, temperature) +
                      _nnclr_side(z_b, p_a, queue, temperature))
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    assert float(metrics["nn_same_label"]) == 0.5
    np.testing.assert_allclose(new_state["queue"][:16], _unit(z_a), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(new_state["queue"][16:], state["queue"][16:])
    np.testing.assert_array_equal(new_state["queue_labels"][:16], labels)
    assert int(new_state["queue_pointer"]) == 16

    # The next batch wraps: rows 16-23 then 0-7.
    _, (wrapped, _) = loss_fn(params, new_state, batch, jax.random.PRNGKey(1), 1)
    assert int(wrapped["queue_pointer"]) == 8
    np.testing.assert_allclose(wrapped["queue"][16:], _unit(z_a)[:8], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(wrapped["queue"][:8], _unit(z_a)[8:], rtol=1e-4, atol=1e-6)


def test_queue_smaller_than_the_batch_is_rejected():
    config = tiny_config(RECIPE, **{"method.queue_size": 8})
    with pytest.raises(ConfigError, match="queue_size"):
        methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1)).check_config()
