"""The family of method bases: every method embeds through the one `embed`, and the
two-view methods thread an rng through each view's forward pass, so a ViT with
drop-path trains under any of them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import synthetic_batch, tiny_config

from sslx import methods
from sslx.methods.base import Method, TrainLength
from sslx.methods.common import PredictionMethod, TwoViewMethod
from sslx.methods.simsiam import SimSiam

LENGTH = TrainLength(total_steps=10, steps_per_epoch=5)


def test_every_method_embeds_through_the_base():
    for name in methods.names():
        cls = methods.lookup(name)
        assert cls.embed is Method.embed, f"{name} writes its own embed"


def test_byol_is_a_prediction_method_not_a_simsiam():
    byol = methods.lookup("byol")
    assert issubclass(byol, PredictionMethod) and not issubclass(byol, SimSiam)


@pytest.mark.parametrize("recipe, linear_init", [
    ("simclr_resnet50", "normal_0.01"),  # tf2 LinearLayer
    ("byol_resnet50", "haiku"),          # hk.Linear
    *[(name, "torch") for name in ("mocov3_resnet50", "simsiam_resnet50", "nnclr_resnet50",
                                   "barlow_twins_resnet50", "vicreg_resnet50")],
])
def test_heads_start_as_their_official_framework_does(recipe, linear_init):
    method = methods.build(tiny_config(f"configs/{recipe}.py"), LENGTH)
    assert {head.linear_init for head in method.heads().values()} == {linear_init}


@pytest.mark.parametrize("recipe", ["configs/barlow_twins_resnet50.py",
                                    "configs/vicreg_resnet50.py", "configs/nnclr_resnet50.py"])
def test_two_view_methods_apply_drop_path(recipe):
    config = tiny_config(recipe, **{"model.name": "vit_t", "model.patch_size": 4,
                                    "model.drop_path": 0.5})
    method = methods.build(config, LENGTH)
    assert isinstance(method, TwoViewMethod)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss = jax.jit(method.loss)
    first = loss(params, state, batch, jax.random.PRNGKey(1), 0)[0]
    second = loss(params, state, batch, jax.random.PRNGKey(2), 0)[0]
    assert np.isfinite(first) and first != second  # paths dropped at random
    features = method.embed(params, state, batch["views"][0])
    assert features.shape == (config.train.batch_size, 192)
