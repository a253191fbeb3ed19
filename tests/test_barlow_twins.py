"""Barlow Twins: the recipe's heads, the loss the method computes from its
projections (and its logged parts); sharded runs and resumption are in
test_conformance.py."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from helpers import (
    load_config,
    synthetic_batch,
    tiny_config,
)

from sslx import methods
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


def _barlow_twins(z_a: np.ndarray, z_b: np.ndarray, lambd: float) -> tuple[float, float]:
    """Zbontar et al. eq. 1 on batch-standardised projections (biased variance, eps
    1e-5 as BatchNorm1d): (sum_i (1 - C_ii)^2, lambd sum_{i != j} C_ij^2)."""
    def standardise(z):
        z = np.asarray(z).astype(np.float64)
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)

    c = standardise(z_a).T @ standardise(z_b) / len(z_a)
    off = c - np.diag(np.diag(c))
    return float(np.sum((1 - np.diag(c)) ** 2)), float(lambd * np.sum(off**2))


def test_loss_is_barlow_twins_of_each_views_own_batchnorm_projections():
    """Expected value from the network applied here to each view in its own train-mode
    call (each view its own BatchNorm batch, as the official code): one call on both
    views would standardise over 2B images and give other projections."""
    config = tiny_config(RECIPE, **{"method.loss_scale": 0.5})
    method = methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss_fn = jax.jit(method.loss)
    loss, (_, metrics) = loss_fn(params, state, batch, jax.random.PRNGKey(1), 0)

    variables = {"params": params, **state}
    z_a, z_b = (method.network().apply(variables, view, train=True, mutable=["batch_stats"])[0]
                ["projection"] for view in batch["views"])
    invariance, redundancy = _barlow_twins(z_a, z_b, config.method.lambd)
    np.testing.assert_allclose(loss, 0.5 * (invariance + redundancy), rtol=1e-4)
    np.testing.assert_allclose(metrics["invariance"], invariance, rtol=1e-4)
    np.testing.assert_allclose(metrics["redundancy"], redundancy, rtol=1e-4)
    # Sharper: a second view that is the first times 3 gives the first view's projections
    # when each view is its own BatchNorm batch (BatchNorm removes the scale, the layers
    # before it have no bias), so C_ii = 1; one batch for both views would not.
    scaled = {**batch, "views": (batch["views"][0], 3 * batch["views"][0])}
    _, (_, metrics) = loss_fn(params, state, scaled, jax.random.PRNGKey(1), 0)
    assert float(metrics["invariance"]) < 1e-3
