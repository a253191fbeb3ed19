"""iBOT: the patch loss counts masked patches only, the two centers, no gradient
into the teacher, sharded = unsharded, resume."""

from __future__ import annotations

import jax
import numpy as np
from helpers import (
    assert_sharded_step_matches,
    assert_trains_and_resumes,
    end_to_end_config,
    synthetic_batch,
    tiny_config,
)

from sslx import methods
from sslx.methods.base import TrainLength

RECIPE = "configs/ibot_vits16.py"


def test_patch_loss_uses_masks_and_teacher_gets_no_gradient():
    config = tiny_config(RECIPE)
    method = methods.build(config, TrainLength(total_steps=100, steps_per_epoch=10))
    method.check_config()
    batch = jax.tree.map(np.asarray, synthetic_batch(config))
    assert len(batch["masks"]) == 2 and batch["masks"][0].shape == (16, 16)
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss_fn = jax.jit(method.loss)
    rng = jax.random.PRNGKey(1)

    unmasked = {**batch, "masks": tuple(np.zeros_like(m) for m in batch["masks"])}
    loss, (new_state, metrics) = loss_fn(params, state, unmasked, rng, 0)
    assert float(metrics["patch_loss"]) == 0.0
    np.testing.assert_allclose(loss, metrics["cls_loss"], rtol=1e-6)

    loss, (new_state, metrics) = loss_fn(params, state, batch, rng, 0)
    assert float(metrics["patch_loss"]) > 0.0
    np.testing.assert_allclose(loss, metrics["cls_loss"] + metrics["patch_loss"], rtol=1e-6)
    # Both centers move towards the teacher's mean output; the patch center's mean
    # runs over patches too, so the two differ.
    assert not np.allclose(new_state["center"], 0.0)
    assert not np.allclose(new_state["patch_center"], new_state["center"])

    grads = jax.jit(jax.grad(lambda s: method.loss(params, s, batch, rng, 0)[0]))(state)
    for leaf in jax.tree.leaves(grads["teacher"]):
        assert not np.any(leaf)


def test_step_on_8_devices_equals_1_device(npz, tmp_path):
    assert_sharded_step_matches(end_to_end_config(RECIPE, npz), tmp_path)


def test_trains_and_resumes(npz, tmp_path, capsys):
    assert_trains_and_resumes(RECIPE, npz, str(tmp_path / "run"), capsys)
