"""Colorization: sRGB <-> Lab against CIE reference values and a numpy conversion,
eagerly and inside tf.data; the ab bins cover the gamut; soft-encoding and class
rebalancing; the loss against numpy on network outputs; the producer's targets
are the Lab of its own crop; the photo source; config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from helpers import SMALL_BACKBONE, tiny_config

from sslx import methods
from sslx.config_defaults import base_config
from sslx.data import color, photos, pipeline
from sslx.data.spec import input_spec
from sslx.errors import ConfigError, DataError
from sslx.methods.base import TrainLength
from sslx.methods.colorization import colorization_loss, lightness_input
from sslx.models.resnet import ResNet

RECIPE = "configs/colorization_resnet50.py"
LENGTH = TrainLength(total_steps=10, steps_per_epoch=5)


def _numpy_lab(rgb):
    """CIE Lab (D65) of sRGB in [0, 1], written from the CIE form of f (delta = 6/29)."""
    rgb = np.asarray(rgb, np.float64)
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    delta = 6 / 29
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def _in_dataset_map(fn, x):
    return next(iter(tf.data.Dataset.from_tensors(x).map(fn))).numpy()


# White, black and the sRGB primaries (CIE formulas, D65; skimage's rgb2lab agrees).
REFERENCE = [((1, 1, 1), (100.0, 0.0, 0.0)), ((0, 0, 0), (0.0, 0.0, 0.0)),
             ((1, 0, 0), (53.2408, 80.0925, 67.2032)), ((0, 1, 0), (87.7347, -86.1827, 83.1793)),
             ((0, 0, 1), (32.2970, 79.1875, -107.8602))]


@pytest.mark.parametrize("run", ["eager", "dataset_map"])
def test_lab_matches_reference_values_numpy_and_round_trips(run):
    convert = ((lambda fn, x: fn(tf.constant(x)).numpy()) if run == "eager" else _in_dataset_map)
    rgb, lab = (np.array(values, np.float32) for values in zip(*REFERENCE, strict=True))
    np.testing.assert_allclose(convert(color.rgb_to_lab, rgb), lab, atol=0.01)
    colours = np.random.default_rng(0).random((500, 3)).astype(np.float32)
    got = convert(color.rgb_to_lab, colours)
    np.testing.assert_allclose(got, _numpy_lab(colours), atol=2e-3)
    np.testing.assert_allclose(convert(color.lab_to_rgb, got), colours, atol=1e-4)


def test_bins_are_the_grid_cells_of_the_gamut_and_cover_it():
    bins = color.ab_bins()
    assert len(np.unique(bins, axis=0)) == len(bins) > 200
    np.testing.assert_array_equal(bins % color.GRID, 0)
    ab = _numpy_lab(np.random.default_rng(1).random((20000, 3)))[:, 1:]
    corners = _numpy_lab(np.array(np.meshgrid(*[[0, 1]] * 3)).reshape(3, -1).T)[:, 1:]
    distances = np.linalg.norm(np.concatenate([ab, corners])[:, None] - bins[None], axis=-1)
    assert distances.min(axis=1).max() <= color.GRID  # every colour is within a step of a bin
    assert distances.min(axis=0).max() <= color.GRID  # every bin is near a colour: in gamut


def test_soft_encoding_sums_to_one_and_peaks_at_the_nearest_bin():
    ab = np.random.default_rng(2).uniform(-80, 80, (50, 2)).astype(np.float32)
    bins, weights = (t.numpy() for t in color.soft_encode(tf.constant(ab)))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    squared = np.sum((ab[:, None] - color.ab_bins()[None]) ** 2, axis=-1)
    np.testing.assert_array_equal(bins[:, 0], squared.argmin(1))
    assert (weights[:, :1] >= weights).all()
    nearest5 = np.sort(squared, axis=1)[:, :5]
    gauss = np.exp(-nearest5 / (2 * color.SIGMA ** 2))
    np.testing.assert_allclose(weights, gauss / gauss.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_rebalancing_weights_have_expectation_one_under_the_prior():
    counts = np.random.default_rng(3).integers(0, 1000, len(color.ab_bins())) ** 2
    prior = color.smooth_prior(counts)
    assert np.isclose(prior.sum(), 1.0) and (prior > 0).all()
    weights = color.rebalancing_weights(prior, 0.5)
    assert np.isclose(np.sum(prior * weights), 1.0, rtol=1e-5)
    assert weights[prior.argmin()] > 1 > weights[prior.argmax()]  # rare colours count more
    np.testing.assert_array_equal(color.rebalancing_weights(prior, 1.0), 1.0)


def _numpy_loss(logits, bins, weights):
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, np.asarray(bins), axis=-1)
    return -np.mean(np.sum(np.asarray(weights) * picked, axis=-1))


def test_loss_is_the_rebalanced_cross_entropy_of_the_network_outputs():
    config = tiny_config(RECIPE, **SMALL_BACKBONE)  # ViT-T/4 on 16 px: a 4x4 map, 4x4 targets
    method = methods.build(config, LENGTH)
    rng = np.random.default_rng(4)
    side = color.target_side(16)
    batch = {"views": (rng.normal(size=(16, 16, 16, 3)).astype(np.float32),),
             "color_bins": rng.integers(0, len(color.ab_bins()), (16, side, side, 5)),
             "color_weights": rng.random((16, side, side, 5)).astype(np.float32)}
    batch["color_bins"] = batch["color_bins"].astype(np.int32)
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss, (_, metrics) = method.loss(params, state, batch, jax.random.PRNGKey(1), 0)
    outputs = method.network().apply({"params": params, **state}, batch["views"][0], train=True,
                                     mutable=["batch_stats"])[0]
    assert outputs["logits"].shape == (16, side, side, len(color.ab_bins()))
    want = _numpy_loss(outputs["logits"], batch["color_bins"], batch["color_weights"])
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    top1 = np.mean(np.argmax(outputs["logits"], -1) == batch["color_bins"][..., 0])
    np.testing.assert_allclose(metrics["top1"], top1)


def test_coarse_logits_are_upsampled_to_the_targets():
    logits = jnp.asarray(np.random.default_rng(5).normal(size=(2, 1, 1, 7)), jnp.float32)
    bins = np.random.default_rng(6).integers(0, 7, (2, 4, 4, 3)).astype(np.int32)
    weights = np.ones((2, 4, 4, 3), np.float32)
    loss, _ = colorization_loss(logits, bins, weights)
    want = _numpy_loss(np.broadcast_to(logits, (2, 4, 4, 7)), bins, weights)
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_network_input_is_the_lightness_of_the_normalised_image():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    rgb = np.random.default_rng(7).random((4, 3, 3, 3)).astype(np.float32)
    normalised = (rgb - np.array(mean)) / np.array(std)
    got = np.asarray(lightness_input(jnp.asarray(normalised, jnp.float32), mean, std))
    want = (_numpy_lab(rgb)[..., :1] - 50) / 50
    np.testing.assert_allclose(got, np.repeat(want, 3, axis=-1), atol=1e-4)


def test_resnet_returns_the_map_it_pools():
    model = ResNet((1, 1, 1, 1), width=4, stem="cifar")
    x = jnp.ones((2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    pooled, feature_map = model.apply(variables, x, train=False, return_map=True)
    assert feature_map.shape == (2, 2, 2, 32)
    np.testing.assert_allclose(pooled, feature_map.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(model.apply(variables, x, train=False), pooled)


def _assert_targets_are_the_lab_of_the_crop(config, example) -> None:
    crop = np.asarray(example["views"][0]) * np.array(config.data.std) + np.array(config.data.mean)
    ab = _numpy_lab(np.clip(crop, 0, 1)[..., ::4, ::4, :])[..., 1:]
    squared = np.sum((ab[..., None, :] - color.ab_bins()) ** 2, axis=-1)
    bins, weights = np.asarray(example["color_bins"]), np.asarray(example["color_weights"])
    agree = bins[..., 0] == squared.argmin(-1)
    assert agree.mean() > 0.99  # float32 ties aside
    rebalancing = color.training_weights(config, input_spec(config).crops[0].size)
    np.testing.assert_allclose(weights.sum(-1), rebalancing[bins[..., 0]], rtol=1e-4)


def test_producer_targets_are_the_lab_of_its_crop_eagerly_and_in_the_pipeline():
    config = tiny_config(RECIPE)  # the `sample_photos` RGB patches
    spec = input_spec(config)
    images, labels = photos.patches("train", config.data.image_size)
    made = color._colorization({"image": tf.constant(images[0]), "label": labels[0]},
                               tf.constant([1, 2], tf.int64), spec, config)
    assert made["color_bins"].shape == (4, 4, 5)
    _assert_targets_are_the_lab_of_the_crop(config, made)
    batches = pipeline.train_iterator(config, spec, inputs=("colorization",),
                                      process_index=0, process_count=1)
    batch = next(batches)
    assert np.std(batch["color_bins"][..., 0]) > 0  # coloured photos: several bins
    _assert_targets_are_the_lab_of_the_crop(config, batch)


def test_sample_photos_are_fixed_labelled_patches():
    images, labels = photos.patches("test", 32)
    assert images.shape == (1024, 32, 32, 3) and images.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(8))
    np.testing.assert_array_equal(photos.patches.__wrapped__("test", 32)[0], images)
    with pytest.raises(DataError, match="no split 'validation'"):
        photos.patches("validation", 32)


@pytest.mark.parametrize("override, message", [
    ({"views.global_crops.grayscale_prob": 0.2}, "grayscale_prob"),
    ({"views.global_crops.size": 14}, "multiple of 4"),
    ({"views.global_crops.count": 2}, "exactly 1 views"),
    ({"method.rebalance_lambda": 0.0}, "rebalance_lambda"),
    ({"method.prior_examples": 0}, "prior_examples"),
    ({"method.input_std": (0.2, 0.0, 0.2)}, "input_std"),
])
def test_bad_settings_are_refused_with_the_field(override, message):
    config = tiny_config(RECIPE, **override)
    with pytest.raises(ConfigError, match=message):
        methods.build(config, LENGTH).check_config()


def test_input_normalisation_other_than_the_datas_is_refused():
    config = base_config(method="colorization")  # not linked to data.mean as the recipe does
    assert config.method.input_mean != config.data.mean
    spec = input_spec(config)
    example = {"image": tf.zeros([32, 32, 3], tf.uint8), "label": tf.constant(0)}
    with pytest.raises(ConfigError, match="input_mean"):
        color._colorization(example, tf.constant([0, 0], tf.int64), spec, config)
