"""MAE: the masking drawn in the step, patchify as MAE orders pixels, the loss
against a numpy reference, an encoder that sees only the kept patches, and the
reconstruction picture."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import SMALL_BACKBONE, synthetic_batch, tiny_config
from PIL import Image

from sslx import evaluators, losses, methods, train
from sslx.errors import ConfigError
from sslx.methods.base import TrainLength
from sslx.methods.mae import random_masking
from sslx.models.vit import patchify, unpatchify

RECIPE = "configs/mae_vitb.py"
LENGTH = TrainLength(total_steps=10, steps_per_epoch=5)


def _method(**overrides):
    config = tiny_config(RECIPE, **{**SMALL_BACKBONE, **overrides})
    return methods.build(config, LENGTH), config


def test_masking_hides_the_same_count_per_image_differently_each_time():
    keep, mask = random_masking(jax.random.PRNGKey(0), 6, 49, 0.75)
    mask = np.asarray(mask)
    assert keep.shape == (6, 12)
    np.testing.assert_array_equal(mask.sum(axis=1), round(0.75 * 49))
    for row in range(6):  # the kept indices are exactly the unmasked patches
        np.testing.assert_array_equal(np.sort(keep[row]), np.flatnonzero(~mask[row]))
    assert len({tuple(row) for row in mask}) == 6  # different per image
    _, other_step = random_masking(jax.random.PRNGKey(1), 6, 49, 0.75)
    assert not np.array_equal(mask, other_step)  # and per step
    _, again = random_masking(jax.random.PRNGKey(0), 6, 49, 0.75)
    np.testing.assert_array_equal(mask, again)  # reproducible from the rng
    _, mask_196 = random_masking(jax.random.PRNGKey(2), 3, 196, 0.75)
    np.testing.assert_array_equal(np.asarray(mask_196).sum(axis=1), round(0.75 * 196))


def test_patchify_orders_pixels_as_mae_and_unpatchify_inverts_it():
    images = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
    patches = np.asarray(patchify(jnp.asarray(images), 4))
    # MAE's `patchify` on NCHW: reshape(n, c, h, p, w, q) -> einsum('nchpwq->nhwpqc').
    nchw = images.transpose(0, 3, 1, 2).reshape(2, 3, 2, 4, 3, 4)
    want = np.einsum("nchpwq->nhwpqc", nchw).reshape(2, 6, 48)
    np.testing.assert_array_equal(patches, want)
    np.testing.assert_array_equal(unpatchify(jnp.asarray(patches), 4, (2, 3)), images)


def _numpy_mae_loss(pred, images, mask, patch, norm_pix):
    b, h, w, c = images.shape
    target = images.reshape(b, h // patch, patch, w // patch, patch, c)
    target = target.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, patch * patch * c)
    target = target.astype(np.float64)
    if norm_pix:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, keepdims=True, ddof=1)
        target = (target - mean) / np.sqrt(var + 1e-6)
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_counts_only_masked_patches(norm_pix):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    pred = rng.normal(size=(3, 4, 48)).astype(np.float32)
    mask = rng.random((3, 4)) < 0.6
    mask[0, 0] = True
    got = losses.mae_loss(pred, patchify(jnp.asarray(images), 4), mask, norm_pix)
    np.testing.assert_allclose(got, _numpy_mae_loss(pred, images, mask, 4, norm_pix), rtol=1e-5)
    changed = pred.copy()
    changed[~mask] += 10.0  # a visible patch's prediction does not count
    np.testing.assert_allclose(losses.mae_loss(changed, patchify(jnp.asarray(images), 4), mask,
                                               norm_pix), got, rtol=1e-6)


def test_norm_pix_targets_have_zero_mean_and_unit_variance_per_patch():
    patches = np.random.default_rng(0).normal(3.0, 5.0, size=(4, 10, 48))
    normalized = np.asarray(losses.normalized_patches(patches))
    np.testing.assert_allclose(normalized.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalized.var(-1, ddof=1), 1.0, rtol=1e-5)


def test_encoder_sees_only_the_kept_patches_and_the_loss_is_maes():
    method, config = _method()
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    images = batch["views"][0]
    rng = jax.random.PRNGKey(3)
    predict = jax.jit(functools.partial(method.predict, train=True))
    prediction, mask = predict(params, images, rng)
    assert method.grid == (4, 4)  # 16 px crops, 4 px patches
    assert prediction.shape == (16, 16, 48) and mask.shape == (16, 16)
    # Changing the masked patches' pixels changes nothing the network predicts.
    pixels = np.repeat(np.repeat(np.asarray(mask).reshape(16, 4, 4), 4, 1), 4, 2)[..., None]
    noisy = jnp.where(pixels, images + 5.0, images)
    np.testing.assert_allclose(predict(params, noisy, rng)[0], prediction, rtol=1e-5,
                               atol=1e-5)
    loss, (new_state, metrics) = jax.jit(method.loss)(params, state, batch, rng, 0)
    want = _numpy_mae_loss(np.asarray(prediction, np.float64), np.asarray(images),
                           np.asarray(mask), 4, norm_pix=True)
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    assert float(metrics["masked_share"]) == pytest.approx(12 / 16)
    grads = jax.jit(jax.grad(lambda p: method.loss(p, state, batch, rng, 0)[0]))(params)
    for part in ("backbone", "decoder"):
        assert any(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads[part])), part
    # The unmasked encoder's class token is what evaluation embeds.
    backbone = method.network().backbone
    np.testing.assert_allclose(
        jax.jit(method.embed)(params, new_state, images),
        jax.jit(backbone.apply, static_argnames="train")({"params": params["backbone"]}, images,
                                                         train=False), rtol=1e-5, atol=1e-6)


def test_keep_of_every_patch_in_order_is_the_whole_image():
    method, config = _method()
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, _ = method.init(jax.random.PRNGKey(0), batch)
    backbone, variables = method.network().backbone, {"params": params["backbone"]}
    images = batch["views"][0]
    keep = jnp.broadcast_to(jnp.arange(16), (16, 16))
    apply = jax.jit(backbone.apply, static_argnames="train")
    np.testing.assert_allclose(apply(variables, images, train=False, keep=keep),
                               apply(variables, images, train=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"model.name": "resnet18"}, "needs a ViT backbone"),
    ({"method.mask_ratio": 1.0}, "must be in"),
    ({"method.mask_ratio": 0.95}, "keeps no patch"),
    ({"method.decoder_heads": 5}, "divisible"),
])
def test_bad_settings_are_refused(overrides, match):
    config = tiny_config(RECIPE, **{**SMALL_BACKBONE, **overrides})
    with pytest.raises(ConfigError, match=match):
        methods.build(config, LENGTH).check_config()


def test_reconstruction_picture_and_its_error(npz, tmp_path):
    config = tiny_config(RECIPE, npz=npz, **SMALL_BACKBONE)
    run = train.prepare(config, str(tmp_path))
    state = run.init_state()
    section = ml_collections.ConfigDict({**evaluators.default_config("reconstruction"),
                                         "images": 3})
    metrics = evaluators.build("reconstruction", section, run).evaluate(state)
    assert metrics["masked_mse"] > 0
    path = tmp_path / "plots" / "reconstruction_step0.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (640, 500) and os.path.getsize(path) > 1000
    other = train.prepare(tiny_config(npz=npz, **SMALL_BACKBONE), str(tmp_path / "simclr"))
    with pytest.raises(ConfigError, match="has no `reconstruct`"):
        evaluators.build("reconstruction", section, other)
