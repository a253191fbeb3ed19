"""NNCLR: the FIFO support set, the loss the method computes from its networks
and queue, and the shared train-loop checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_sharded_step_matches,
    assert_trains_and_resumes,
    end_to_end_config,
    synthetic_batch,
    tiny_config,
)

from sslx import losses, methods
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


def test_loss_looks_up_the_queue_then_enqueues_the_first_view():
    config = tiny_config(RECIPE, **{"method.queue_size": 24})
    method = methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    np.testing.assert_allclose(jnp.linalg.norm(state["queue"], axis=-1), 1.0, rtol=1e-5)
    loss_fn = jax.jit(method.loss)
    loss, (new_state, metrics) = loss_fn(params, state, batch, jax.random.PRNGKey(1), 0)

    outputs, _ = method.forward_views(params, state, batch)
    (z_a, p_a), (z_b, p_b) = ((o["projection"], o["prediction"]) for o in outputs)
    expected = losses.nnclr_loss(z_a, z_b, state["queue"], config.method.temperature, p_a, p_b)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    unit_z_a = z_a / jnp.linalg.norm(z_a, axis=-1, keepdims=True)
    np.testing.assert_allclose(new_state["queue"][:16], unit_z_a, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(new_state["queue"][16:], state["queue"][16:])
    np.testing.assert_array_equal(new_state["queue_labels"][:16], batch["label"])
    assert int(new_state["queue_pointer"]) == 16
    assert 0.0 <= float(metrics["nn_same_label"]) <= 1.0

    # The next batch wraps: rows 16-23 then 0-7.
    _, (wrapped, _) = loss_fn(params, new_state, batch, jax.random.PRNGKey(1), 1)
    assert int(wrapped["queue_pointer"]) == 8
    np.testing.assert_allclose(wrapped["queue"][16:], unit_z_a[:8], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(wrapped["queue"][:8], unit_z_a[8:], rtol=1e-4, atol=1e-6)


def test_queue_smaller_than_the_batch_is_rejected():
    config = tiny_config(RECIPE, **{"method.queue_size": 8})
    with pytest.raises(ConfigError, match="queue_size"):
        methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1)).check_config()


def test_step_on_8_devices_equals_1_device(npz, tmp_path):
    assert_sharded_step_matches(end_to_end_config(RECIPE, npz), tmp_path)


def test_trains_and_resumes(npz, tmp_path, capsys):
    assert_trains_and_resumes(RECIPE, npz, str(tmp_path / "run"), capsys)
