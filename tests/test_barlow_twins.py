"""Barlow Twins: the recipe's heads, the loss the method computes from its
projections (and its logged parts), and the shared train-loop checks."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from helpers import (
    assert_sharded_step_matches,
    assert_trains_and_resumes,
    end_to_end_config,
    load_config,
    synthetic_batch,
    tiny_config,
)

from sslx import losses, methods
from sslx.methods.base import TrainLength
from sslx.optim import param_paths

RECIPE = "configs/barlow_twins_resnet50.py"


def test_recipe_projector_is_8192_wide_and_runlocal_shrinks_it():
    assert load_config(RECIPE).method.projector_hidden_dim == 8192
    assert load_config(RECIPE).method.projector_dim == 8192
    assert load_config(RECIPE, "runlocal").method.projector_dim == 512


def test_recipe_gives_biases_and_norms_their_own_lr():
    """The paper's lr 0.0048 for biases and BN params (0.2 for weights) reaches every
    vector param of the model and no matrix."""
    config = tiny_config(RECIPE)
    ((pattern, factor),) = config.optim.lr_multipliers.items()
    np.testing.assert_allclose(factor * config.optim.base_lr, 0.0048)
    method = methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1))
    params, _ = jax.eval_shape(method.init, jax.random.PRNGKey(0), synthetic_batch(config))
    for path, leaf in zip(jax.tree.leaves(param_paths(params)), jax.tree.leaves(params),
                          strict=True):
        assert bool(re.search(pattern, path)) == (leaf.ndim == 1), path


def test_loss_is_barlow_twins_of_the_projections_and_symmetric():
    config = tiny_config(RECIPE, **{"method.loss_scale": 0.5})
    method = methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss_fn = jax.jit(method.loss)
    loss, (_, metrics) = loss_fn(params, state, batch, jax.random.PRNGKey(1), 0)

    outputs, _ = method.forward_views(params, state, batch)
    z_a, z_b = (o["projection"] for o in outputs)
    expected = losses.barlow_twins(z_a, z_b, config.method.lambd)
    np.testing.assert_allclose(loss, 0.5 * expected, rtol=1e-4)
    np.testing.assert_allclose(metrics["invariance"] + metrics["redundancy"], expected,
                               rtol=1e-4)
    np.testing.assert_allclose(metrics["invariance"], losses.barlow_twins(z_a, z_b, 0.0),
                               rtol=1e-4)
    # Each view is its own forward pass (own BatchNorm batch): swapping views is exact.
    swapped = {**batch, "views": batch["views"][::-1]}
    np.testing.assert_allclose(loss_fn(params, state, swapped, jax.random.PRNGKey(1), 0)[0],
                               loss, rtol=1e-5)


def test_step_on_8_devices_equals_1_device(npz, tmp_path):
    assert_sharded_step_matches(end_to_end_config(RECIPE, npz), tmp_path)


def test_trains_and_resumes(npz, tmp_path, capsys):
    assert_trains_and_resumes(RECIPE, npz, str(tmp_path / "run"), capsys)
