"""Device augmentation (`config.data.augment_on='device'`): each JAX op equals its
TF twin at fixed parameters, the whole chain has the host chain's distribution,
draws are per example and reproducible from the rng, and a run in this mode is
the same on 8 devices as on 1 and resumes as if uninterrupted."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    assert_same_steps,
    end_to_end_config,
    preempted_after,
    tiny_config,
    trainer_steps,
)

from sslx import saved_config, train
from sslx.config_defaults import view_group
from sslx.data import augment, device_augment, pipeline
from sslx.data.spec import input_spec
from sslx.data.views import view_specs
from sslx.errors import ConfigError

SIMCLR = "configs/simclr_resnet50.py"
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _image(size: int = 24) -> np.ndarray:
    """A smooth, colourful, left-right asymmetric float image in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size] / size
    return np.stack([x, y, 0.5 + 0.4 * np.sin(6 * x * y)], axis=-1).astype(np.float32)


def _spec(**fields) -> augment.ViewSpec:
    return view_specs(ml_collections.ConfigDict({"g": view_group(count=1, size=24, **fields)}))[0]


@pytest.mark.parametrize("host, device, amounts", [
    (augment._adjust_brightness, device_augment.adjust_brightness, (0.0, 0.6, 1.4)),
    (augment._adjust_contrast, device_augment.adjust_contrast, (0.0, 0.6, 1.4)),
    (augment._adjust_saturation, device_augment.adjust_saturation, (0.0, 0.6, 1.4)),
    (augment._adjust_hue, device_augment.adjust_hue, (-0.5, -0.1, 0.0, 0.23, 0.5)),
])
def test_colour_ops_equal_the_host_ops(host, device, amounts):
    image = _image()
    for amount in amounts:
        want = host(tf.constant(image), tf.constant(amount, tf.float32)).numpy()
        np.testing.assert_allclose(device(jnp.asarray(image), amount), want, atol=2e-6,
                                   err_msg=f"{host.__name__}({amount})")


@pytest.mark.parametrize("kernel", augment.BLUR_KERNELS)
@pytest.mark.parametrize("size", [5, 24, 64])
def test_blur_equals_the_host_blur(kernel, size):
    """Mirrored borders, the radius rule and truncation at the sigma's own radius
    (the static kernel reaches for the largest sigma), down to a crop smaller
    than the kernel."""
    image = _image(size)
    for sigma in (0.1, 0.7, 1.3, 2.0):
        want = augment._blur(tf.constant(image), tf.constant(sigma), kernel).numpy()
        got = device_augment.blur(jnp.asarray(image), jnp.float32(sigma), kernel, max_sigma=2.0)
        np.testing.assert_allclose(got, want, atol=2e-6, err_msg=f"sigma={sigma}")


def test_flip_grayscale_and_solarize_equal_the_host_ops():
    image, key = _image(), jax.random.key(0)
    always = {"flip": _spec(flip_prob=1.0), "grayscale": _spec(grayscale_prob=1.0),
              "solarize": _spec(solarize_prob=1.0)}
    for name, spec in always.items():
        want = augment.OPS[name].apply(tf.constant(image), tf.constant([0, 0], tf.int64),
                                       spec).numpy()
        np.testing.assert_allclose(device_augment.DEVICE_OPS[name](jnp.asarray(image), key,
                                                                   spec), want, atol=1e-6)


def test_every_host_op_after_the_crop_has_a_device_twin():
    assert device_augment.after_crop() == tuple(augment.OPS)[1:]
    assert set(device_augment.DEVICE_OPS) == set(augment.OPS) - {"crop"}


def _host_chain(image: np.ndarray, spec, count: int) -> np.ndarray:
    """`count` draws of the host ops after the crop, then normalize, inside tf.data."""
    ops = [op for name, op in augment.OPS.items() if name != "crop"]

    def draw(i: tf.Tensor) -> tf.Tensor:
        seeds = tf.unstack(tf.random.split(tf.stack([i, tf.constant(3, tf.int64)]), len(ops)))
        x = tf.constant(image)
        for op, seed in zip(ops, seeds, strict=True):
            x = op.apply(x, seed, spec)
        return augment.normalize(tf.clip_by_value(x, 0.0, 1.0), MEAN, STD)

    dataset = tf.data.Dataset.range(count).map(draw, num_parallel_calls=2).batch(count)
    return next(dataset.as_numpy_iterator())


def _device_chain(image: np.ndarray, spec, count: int) -> np.ndarray:
    images = jnp.broadcast_to(jnp.asarray(image), (count, *image.shape))
    return np.asarray(jax.jit(lambda x: device_augment.augment_views(
        x, jax.random.key(1), spec, MEAN, STD))(images))


@pytest.mark.parametrize("fields", [
    {"solarize_prob": 0.2},  # the SimCLR view with solarization
    {"blur_kernel": "three_sigma", "blur_prob": 0.9, "jitter_prob": 0.5, "hue": 0.4,
     "grayscale_prob": 0.5, "flip_prob": 0.3},
])
def test_device_chain_has_the_host_chain_distribution(fields):
    """Over 2,000 draws of one image: each pixel's mean and variance, and the mean
    and variance of each draw's brightness and contrast, agree within 5 standard
    errors (the draws themselves differ: TF's seeds against JAX's rng)."""
    count, spec, image = 2000, _spec(**fields), _image()
    host, device = _host_chain(image, spec, count), _device_chain(image, spec, count)
    assert host.shape == device.shape == (count, 24, 24, 3)

    def agree(a: np.ndarray, b: np.ndarray, what: str) -> None:
        for moment, fa, fb in [("mean", a, b),
                               ("variance", (a - a.mean(0)) ** 2, (b - b.mean(0)) ** 2)]:
            error = np.sqrt(fa.var(0) / count + fb.var(0) / count) + 1e-6
            worst = np.max(np.abs(fa.mean(0) - fb.mean(0)) / error)
            assert worst < 5, f"{what} {moment}: {worst:.1f} standard errors apart"

    agree(host, device, "per-pixel")
    agree(host.mean(axis=(1, 2)), device.mean(axis=(1, 2)), "per-draw channel")
    agree(host.std(axis=(1, 2, 3)), device.std(axis=(1, 2, 3)), "per-draw contrast")
    # The coins fire as often: a grayscale draw has equal channels.
    gray = lambda x: np.mean(np.ptp(x * np.asarray(STD) + np.asarray(MEAN), axis=-1).max(
        axis=(1, 2)) < 1e-5)
    assert abs(gray(host) - gray(device)) < 5 * np.sqrt(0.25 * 2 / count)


def test_draws_are_per_example_and_reproducible_from_the_rng():
    spec, images = _spec(), jnp.broadcast_to(jnp.asarray(_image()), (8, 24, 24, 3))
    run = jax.jit(lambda x, key: device_augment.augment_views(x, key, spec, MEAN, STD))
    first = np.asarray(run(images, jax.random.key(0)))
    assert len({row.tobytes() for row in first}) == 8  # no two examples alike
    np.testing.assert_array_equal(run(images, jax.random.key(0)), first)
    assert not np.allclose(run(images, jax.random.key(1)), first)


def _config(npz: str, augment_on: str, **overrides):
    return end_to_end_config(SIMCLR, npz, **{"data.augment_on": augment_on,
                                             "evals.knn.enabled": False,
                                             "eval.export_at_end": False, **overrides})


def test_host_crops_are_the_host_views_before_their_other_ops(npz):
    """With every op after the crop off, the uint8 crops the host sends are the
    float views of host mode, rounded; the train step's normalisation makes them
    the host mode's views again within that rounding."""
    off = {f"views.global_crops.{field}": 0.0 for field in
           ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")}
    batches = {}
    for mode in device_augment.AUGMENT_ON:
        config = _config(npz, mode, **off)
        spec = input_spec(config)
        batches[mode] = next(pipeline.train_iterator(config, spec, inputs=("views",)))
    mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
    for host, crops in zip(batches["host"]["views"], batches["device"]["views"], strict=True):
        assert crops.dtype == np.uint8 and host.dtype == np.float32
        np.testing.assert_allclose(crops / 255.0, host * std + mean, atol=0.5 / 255 + 1e-6)
        finished = device_augment.augment_views(jnp.asarray(crops), jax.random.key(0),
                                                spec.crops[0], mean, std)
        np.testing.assert_allclose(finished, host, atol=0.5 / 255 / std.min() + 1e-5)


def test_device_mode_step_on_8_devices_equals_1_device(npz, tmp_path):
    """The trainer's step on both sides: the augmentation runs inside it."""
    config = _config(npz, "device")
    devices = jax.devices()
    assert_same_steps(trainer_steps(config, str(tmp_path / "eight"), devices),
                      trainer_steps(config, str(tmp_path / "one"), devices[:1]))


def test_device_mode_resume_equals_uninterrupted(npz, tmp_path):
    config = _config(npz, "device")
    train.train_and_evaluate(config, str(tmp_path / "straight"))
    with preempted_after(2):
        assert train.train_and_evaluate(config, str(tmp_path / "resumed"))["preempted"]
    assert train.train_and_evaluate(config, str(tmp_path / "resumed"))["step"] == 3
    straight = train.prepare(config, str(tmp_path / "straight")).restore_state()
    resumed = train.prepare(config, str(tmp_path / "resumed")).restore_state()
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_bad_mode_and_a_method_without_views_are_config_errors(npz):
    with pytest.raises(ConfigError, match=r"config.data.augment_on='gpu' is not one of "
                                          r"host, device"):
        input_spec(_config(npz, "gpu"))
    rotation = tiny_config("configs/rotation_resnet50.py", npz)
    rotation.data.augment_on = "device"
    with pytest.raises(ConfigError, match="augments the 'views' input, which rotation does "
                                          "not read"):
        train.prepare(rotation, "/tmp/unused")


def test_a_saved_config_from_before_device_augmentation_loads(npz, tmp_path):
    values = _config(npz, "host").to_dict()
    del values["data"]["augment_on"]
    loaded = saved_config.from_dict(values)
    assert loaded.data.augment_on == "host"
    assert dataclasses.asdict(input_spec(loaded)) == dataclasses.asdict(
        input_spec(_config(npz, "host")))
