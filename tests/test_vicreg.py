"""VICReg: the recipe's heads and the weighted loss and its logged terms (sharded
runs and resumption: test_conformance.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from helpers import (
    load_config,
    synthetic_batch,
    tiny_config,
)

from sslx import losses, methods
from sslx.methods.base import TrainLength

RECIPE = "configs/vicreg_resnet50.py"


def test_recipe_weights_and_projector():
    config = load_config(RECIPE)
    assert (config.method.sim_weight, config.method.var_weight,
            config.method.cov_weight) == (25.0, 25.0, 1.0)
    assert config.method.projector_hidden_dim == config.method.projector_dim == 8192
    assert load_config(RECIPE, "runlocal").method.projector_dim == 512


def test_loss_is_the_weighted_sum_of_the_logged_terms():
    config = tiny_config(RECIPE, **{"method.cov_weight": 2.0})
    method = methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss, (_, metrics) = jax.jit(method.loss)(params, state, batch, jax.random.PRNGKey(1), 0)

    outputs, _ = method.forward_views(params, state, batch["views"], jax.random.PRNGKey(1))
    z_a, z_b = (o["projection"] for o in outputs)
    np.testing.assert_allclose(loss, losses.vicreg(z_a, z_b, 25.0, 25.0, 2.0), rtol=1e-4)
    terms = losses.vicreg_terms(z_a, z_b)
    for name in ("invariance", "variance", "covariance"):
        np.testing.assert_allclose(metrics[name], getattr(terms, name), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(
        loss, 25 * metrics["invariance"] + 25 * metrics["variance"] + 2 * metrics["covariance"],
        rtol=1e-5)
