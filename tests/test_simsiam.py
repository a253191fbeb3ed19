"""SimSiam: no gradient flows through the projections it regresses to, the
predictor keeps the peak lr while the encoder's decays (sharded runs and
resumption: test_conformance.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from helpers import (
    tiny_config,
)
from test_byol import check_recipes_build, tiny_method

from sslx import optim
from sslx.methods.common import forward_each_view

RECIPE = "configs/simsiam_resnet50.py"


def _neg_cos(p: jax.Array, z: jax.Array) -> jax.Array:
    p = p / jnp.linalg.norm(p, axis=1, keepdims=True)
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    return -jnp.mean(jnp.sum(p * z, axis=1))


def test_recipes_build():
    check_recipes_build([RECIPE, "configs/simsiam_resnet18_cifar10.py"])


def test_gradient_only_through_the_predictions():
    """The loss gradient equals that of the same loss with the projections z
    replaced by constants: z is stop-gradient."""
    method, batch, params, state = tiny_method(RECIPE)
    rng = jax.random.key(1)
    online_rng, _ = jax.random.split(rng)
    views = batch["views"]

    def outputs(p):
        return forward_each_view(method.network(), p, state["batch_stats"], views, online_rng)[0]

    z = [np.asarray(out["projection"]) for out in outputs(params)]

    def constant_target_loss(p):
        pred = [out["prediction"] for out in outputs(p)]
        return 0.5 * _neg_cos(pred[0], z[1]) + 0.5 * _neg_cos(pred[1], z[0])

    got = jax.grad(lambda p: method.loss(p, state, batch, rng, jnp.asarray(0))[0])(params)
    expected = jax.grad(constant_target_loss)(params)
    np.testing.assert_allclose(method.loss(params, state, batch, rng, jnp.asarray(0))[0],
                               constant_target_loss(params), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_predictor_lr_constant_while_encoder_decays():
    """With the recipe's `constant_lr` (momentum and wd off to read the lr from the
    update): predictor updates stay at -peak_lr * grad, the backbone's follow the cosine."""
    config = tiny_config(RECIPE, **{"optim.momentum": 0.0, "optim.weight_decay": 0.0})
    total = 8
    _, _, params, _ = tiny_method(RECIPE, total_steps=total)
    opt, schedule = optim.build_optimizer(config.optim, global_batch_size=256,
                                          total_steps=total, steps_per_epoch=4)
    peak = 0.05  # base_lr 0.05 x 256 / 256
    grads = jax.tree.map(jnp.ones_like, params)
    opt_state = opt.init(params)
    for step in range(total):
        updates, opt_state = opt.update(grads, opt_state, params)
        predictor = jax.tree.leaves(updates["predictor"])
        backbone = jax.tree.leaves(updates["backbone"])
        assert all(np.allclose(u, -peak, rtol=1e-6) for u in predictor)
        lr = peak * 0.5 * (1 + np.cos(np.pi * step / total))
        np.testing.assert_allclose(schedule(step), lr, rtol=1e-5, atol=1e-9)
        assert all(np.allclose(u, -lr, rtol=1e-5, atol=1e-9) for u in backbone)
        params = optax.apply_updates(params, updates)
    assert lr < peak / 10


def test_heads_follow_the_paper():
    """Projector: 3 bias-free Dense + BN, the output BN without affine params;
    predictor: Dense-BN-ReLU bottleneck then Dense with bias."""
    _, _, params, state = tiny_method(RECIPE)
    projector, predictor = params["projector"], params["predictor"]
    assert sorted(projector) == ["bn0", "bn1", "dense0", "dense1", "dense2"]
    assert "bn2" in state["batch_stats"]["projector"]
    assert all("bias" not in projector[f"dense{i}"] for i in range(3))
    assert sorted(predictor) == ["bn0", "dense0", "dense1"]
    assert "bias" in predictor["dense1"]
