"""Augmentation ops: shape, dtype, range, seeding and probabilities, each run both
eagerly and inside `tf.data.Dataset.map`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from sslx.data import augment

SIZE = 16


def _image(height: int = 24, width: int = 32) -> tf.Tensor:
    """A smooth colourful float image in [0, 1] (blur and jitter visibly change it)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([x, y, 0.5 + 0.4 * np.sin(6 * x * y)], axis=-1)
    return tf.constant(rgb, tf.float32)


def _seed(i: int) -> tf.Tensor:
    return tf.constant([i, 7], tf.int64)


def _eager(fn, image, seeds):
    return [fn(image, seed).numpy() for seed in seeds]


def _in_map(fn, image, seeds):
    """All seeds through one dataset, so the map function is traced once."""
    dataset = tf.data.Dataset.from_tensor_slices(tf.stack(seeds))
    return list(dataset.map(lambda seed: fn(image, seed)).as_numpy_iterator())


RUNNERS = {"eager": _eager, "map": _in_map}

# name -> op(image, seed, prob); every op has some randomness besides its coin.
OPS = {
    "flip": lambda im, s, p: augment.random_flip(im, s, p),
    "jitter": lambda im, s, p: augment.color_jitter(im, s, 0.4, 0.4, 0.4, 0.1, prob=p),
    "grayscale": lambda im, s, p: augment.random_grayscale(im, s, p),
    "blur": lambda im, s, p: augment.gaussian_blur(im, s, (1.0, 2.0), p),
    "blur_three_sigma": lambda im, s, p: augment.gaussian_blur(im, s, (1.0, 2.0), p,
                                                               "three_sigma"),
    "solarize": lambda im, s, p: augment.solarize(im, s, p),
}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("name", OPS)
def test_op_shape_dtype_range_and_seeding(name, runner):
    run, image = RUNNERS[runner], _image()
    op = lambda im, s: OPS[name](im, s, 0.5)
    outputs = run(op, image, [_seed(i) for i in (0, 1, 2, 3, 4, 5, 6, 7, 0)])
    for out in outputs:
        assert out.shape == (24, 32, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(outputs[-1], outputs[0])
    assert any(not np.array_equal(outputs[0], out) for out in outputs[1:-1])


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("name", OPS)
def test_op_probability_zero_and_one(name, runner):
    run, image = RUNNERS[runner], _image()
    [never] = run(lambda im, s: OPS[name](im, s, 0.0), image, [_seed(1)])
    [always] = run(lambda im, s: OPS[name](im, s, 1.0), image, [_seed(1)])
    np.testing.assert_array_equal(never, image.numpy())
    assert np.abs(always - image.numpy()).max() > 1e-3


RATE_SEEDS = 300  # firing count at p = 0.2: binomial, mean 60, sd 6.9


def _fired(name: str, image: np.ndarray, out: np.ndarray) -> bool:
    """Whether op `name` changed `image`; an op that did not fire must return it as is,
    and a flip that fired must be exactly the horizontal mirror."""
    if np.array_equal(out, image):
        return False
    if name == "flip":
        np.testing.assert_array_equal(out, image[:, ::-1])
    if name == "grayscale":
        np.testing.assert_array_equal(out[..., 0], out[..., 2])
    return True


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("name", OPS)
def test_op_fires_with_its_probability(name, runner):
    """At p = 0.2 each op fires on 60 +- 30 of 300 seeds (4.5 binomial sd): a coin read
    the wrong way round (0.8) or ignored (0.5, 1) is far outside."""
    run, image = RUNNERS[runner], _image(6, 8)
    outputs = run(lambda im, s: OPS[name](im, s, 0.2), image, [_seed(i)
                                                                for i in range(RATE_SEEDS)])
    fired = sum(_fired(name, image.numpy(), out) for out in outputs)
    assert abs(fired - 0.2 * RATE_SEEDS) <= 30, f"{name} fired {fired} times of {RATE_SEEDS}"


def test_flip_is_horizontal():
    image = _image()
    np.testing.assert_array_equal(augment.random_flip(image, _seed(0), 1.0),
                                  image.numpy()[:, ::-1])


def test_grayscale_is_the_luma_of_each_pixel():
    """ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B in all three channels."""
    image = _image()
    out = augment.random_grayscale(image, _seed(0), 1.0).numpy()
    luma = image.numpy() @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(out, np.repeat(luma[..., None], 3, axis=-1), atol=1e-3)


def test_brightness_jitter_scales_every_pixel_by_one_factor():
    """Brightness 0.4 alone multiplies the image by one factor in [0.6, 1.4] per seed."""
    image = 0.5 * _image().numpy() + 0.1  # in [0.1, 0.6]: no clipping at 1.4
    factors = []
    for i in range(8):
        out = augment.color_jitter(tf.constant(image), _seed(i), 0.4, 0.0, 0.0, 0.0).numpy()
        ratio = out / image
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
        factors.append(ratio.flat[0])
    assert 0.6 <= min(factors) < max(factors) <= 1.4 and np.ptp(factors) > 0.1


def test_contrast_jitter_scales_around_the_mean_luma():
    """Contrast 0.4 alone: mean + f (image - mean), mean the image's mean luma, f in
    [0.6, 1.4]."""
    image = 0.5 * _image().numpy() + 0.25  # in [0.25, 0.75]: no clipping
    out = augment.color_jitter(tf.constant(image), _seed(2), 0.0, 0.4, 0.0, 0.0).numpy()
    centred = image - (image @ np.array([0.299, 0.587, 0.114])).mean()
    factor = np.sum((out - image + centred) * centred) / np.sum(centred**2)
    np.testing.assert_allclose(out, image - centred + factor * centred, atol=1e-4)
    assert 0.6 <= factor <= 1.4 and abs(factor - 1) > 1e-3


@pytest.mark.parametrize("runner", RUNNERS)
def test_random_resized_crop(runner):
    run = RUNNERS[runner]
    uint8 = tf.cast(_image() * 255, tf.uint8)
    crop = lambda im, s: augment.random_resized_crop(im, s, SIZE)
    outputs = run(crop, uint8, [_seed(0), _seed(1), _seed(0)])
    for out in outputs:
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(outputs[2], outputs[0])
    assert not np.array_equal(outputs[0], outputs[1])


def test_random_resized_crop_whole_image_and_fallback():
    square = _image(20, 20)
    whole = augment.random_resized_crop(square, _seed(0), SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(whole, augment.resize(square, SIZE, SIZE), atol=1e-6)
    # No 2:1 crop of full area fits a square: the center-crop fallback keeps rows 5..15.
    fallback = augment.random_resized_crop(square, _seed(0), SIZE, scale=(1, 1), ratio=(2, 2))
    expected = augment.resize(square[5:15], SIZE, SIZE)
    np.testing.assert_allclose(fallback, expected, atol=1e-6)


def test_crop_areas_and_ratios_follow_the_ranges():
    boxes = [augment._crop_box(200, 300, _seed(i), (0.2, 0.6), (0.5, 2.0)) for i in range(50)]
    top, left, h, w = np.array(boxes, dtype=np.float64).T
    area = h * w / (200 * 300)
    assert area.min() > 0.18 and area.max() < 0.62
    assert (w / h).min() > 0.45 and (w / h).max() < 2.2
    assert (top + h <= 200).all() and (left + w <= 300).all() and top.min() >= 0
    assert len(set(zip(top, left, strict=True))) > 40


def test_blur_keeps_constants_and_smooths():
    constant = tf.fill([20, 20, 3], 0.3)
    np.testing.assert_allclose(augment.gaussian_blur(constant, _seed(0), prob=1.0), 0.3, atol=1e-6)
    noise = tf.random.stateless_uniform([20, 20, 3], _seed(0))
    blurred = augment.gaussian_blur(noise, _seed(0), (2.0, 2.0), prob=1.0)
    assert np.std(blurred) < 0.7 * np.std(noise)


def test_jitter_with_saturation_only_is_a_noop_on_gray():
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(_image()))
    out = augment.color_jitter(gray, _seed(0), 0.0, 0.0, 0.8, 0.0)
    np.testing.assert_allclose(out, gray, atol=1e-4)  # luma weights sum to 0.9999


def test_solarize_inverts_above_threshold():
    image = tf.constant([[[0.2, 0.5, 0.9]]])
    out = augment.solarize(image, _seed(0), 1.0)
    np.testing.assert_allclose(out, [[[0.2, 0.5, 0.1]]], rtol=1e-6)


def test_normalize():
    out = augment.normalize(tf.fill([2, 2, 3], 0.5), (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    np.testing.assert_allclose(out[0, 0], [0.0, 1.0, 0.5])


def test_center_crop_keeps_the_middle():
    image = tf.constant(np.arange(40 * 80 * 3).reshape(40, 80, 3) % 251, tf.uint8)
    out = augment.center_crop(image, 35, crop_fraction=0.875)  # shorter side stays 40
    assert out.shape == (35, 35, 3)
    np.testing.assert_allclose(out, augment.resize(image[2:37, 22:57], 35, 35), atol=1e-6)


SPEC = augment.ViewSpec(
    group="global", index=0, size=SIZE, crop_scale=(0.2, 1.0), crop_ratio=(0.75, 1.33),
    flip_prob=0.5, jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
    grayscale_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), solarize_prob=0.2,
    crop_resize="bilinear", blur_kernel="tenth_of_side",
)
# The PyTorch recipes' choices (DINO, Barlow Twins, VICReg).
PIL_SPEC = dataclasses.replace(SPEC, crop_resize="bicubic", blur_kernel="three_sigma")


@pytest.mark.parametrize("spec", [SPEC, PIL_SPEC], ids=["tf", "pil"])
@pytest.mark.parametrize("runner", RUNNERS)
def test_augment_view(runner, spec):
    run = RUNNERS[runner]
    uint8 = tf.cast(_image() * 255, tf.uint8)
    view = lambda im, s: augment.augment_view(im, s, spec, (0.5,) * 3, (0.25,) * 3)
    out, again, other = run(view, uint8, [_seed(3), _seed(3), _seed(4)])
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
    assert out.min() >= -2.0 and out.max() <= 2.0  # [0, 1] normalised by mean .5, std .25
    np.testing.assert_array_equal(again, out)
    assert not np.array_equal(other, out)


@pytest.mark.parametrize("spec", [SPEC, PIL_SPEC], ids=["tf", "pil"])
def test_eager_and_map_agree(spec):
    uint8 = tf.cast(_image() * 255, tf.uint8)
    view = lambda im, s: augment.augment_view(im, s, spec, (0.5,) * 3, (0.25,) * 3)
    seeds = [_seed(i) for i in range(4)]
    for eager, mapped in zip(_eager(view, uint8, seeds), _in_map(view, uint8, seeds), strict=True):
        np.testing.assert_allclose(eager, mapped, atol=1e-5)


@pytest.mark.parametrize("kernel, radius", [
    ("tenth_of_side", 2),  # shorter side 50 // 20
    ("three_sigma", 5),    # ceil(3 x 1.5)
])
def test_blur_matches_a_scipy_reference(kernel, radius):
    from scipy import ndimage

    image = tf.random.stateless_uniform([60, 50, 3], _seed(0))
    out = augment.gaussian_blur(image, _seed(1), (1.5, 1.5), prob=1.0, kernel=kernel).numpy()
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / 1.5) ** 2)
    kernel /= kernel.sum()
    expected = ndimage.correlate1d(image.numpy(), kernel, axis=0, mode="reflect")
    expected = ndimage.correlate1d(expected, kernel, axis=1, mode="reflect")
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_three_sigma_blur_on_a_small_crop_stays_inside_it():
    """sigma 2 on a 5-pixel crop: the radius is cut to side - 1, so every mirrored tap
    lands inside the image and a constant stays constant."""
    out = augment.gaussian_blur(tf.fill([5, 7, 3], 0.4), _seed(0), (2.0, 2.0), prob=1.0,
                                kernel="three_sigma")
    np.testing.assert_allclose(out, 0.4, atol=1e-6)


@pytest.mark.parametrize("method, pil_name", [("bilinear", "BILINEAR"), ("bicubic", "BICUBIC")])
def test_crop_resize_is_pils(method, pil_name):
    """A whole-image crop resized by `method` is PIL's resize of the same name, which
    torchvision's RandomResizedCrop calls (DINO, Barlow Twins and VICReg ask for
    BICUBIC): within 2/255 when shrinking, and on average within 1/255 when enlarging
    (the two differ in a few border pixels)."""
    from PIL import Image

    noise = np.random.default_rng(0).normal(0, 0.15, (40, 40, 3))
    image = (np.clip(_image(40, 40).numpy() + noise, 0, 1) * 255).astype(np.uint8)
    whole = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), method=method)
    down = augment.random_resized_crop(tf.constant(image), _seed(0), 16, **whole).numpy()
    pil_down = np.asarray(Image.fromarray(image).resize((16, 16), getattr(Image, pil_name)))
    assert np.abs(down * 255 - pil_down).max() < 2
    up = augment.resize(tf.constant(image[:10, :10]), 24, 24, method).numpy()
    pil_up = np.asarray(Image.fromarray(image[:10, :10]).resize((24, 24),
                                                                getattr(Image, pil_name)))
    assert np.abs(up * 255 - pil_up).mean() < 1


# ---------------------------------------------------------------- the registry


def _view(**fields) -> augment.ViewSpec:
    """SPEC with every probability 0.5 (each registered op may or may not fire)."""
    half = {name: 0.5 for name, field in augment.FIELDS.items()
            if isinstance(field, augment.PerCrop) and field.high == 1.0}
    return dataclasses.replace(SPEC, **{**half, **fields})


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("name", augment.OPS)
def test_registered_op_eagerly_and_in_map(name, runner):
    """Every registered op, as the pipeline calls it: a [0, 1] float image in and out,
    the crop's size after the crop, the same output for the same seed."""
    run, image, view = RUNNERS[runner], _image(), _view()
    op = lambda im, s: augment.OPS[name].apply(im, s, view)
    outputs = run(op, image, [_seed(i) for i in (0, 1, 2, 3, 4, 5, 6, 7, 0)])
    shape = (SIZE, SIZE, 3) if name == "crop" else (24, 32, 3)
    for out in outputs:
        assert out.shape == shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(outputs[-1], outputs[0])
    assert any(not np.array_equal(outputs[0], out) for out in outputs[1:-1])


@pytest.mark.parametrize("runner", RUNNERS)
def test_augment_view_is_the_ops_in_order_on_split_seeds(runner):
    """Op i of crop, flip, jitter, grayscale, blur, solarize gets seed i of
    `split(seed, 6)`: the seeds every recipe's augmentations are drawn from."""
    uint8 = tf.cast(_image() * 255, tf.uint8)
    v = PIL_SPEC

    def by_hand(image, seed):
        s = tf.unstack(tf.random.split(seed, 6))
        x = augment.random_resized_crop(image, s[0], v.size, v.crop_scale, v.crop_ratio,
                                        "bicubic")
        x = augment.random_flip(x, s[1], v.flip_prob)
        x = augment.color_jitter(x, s[2], v.brightness, v.contrast, v.saturation, v.hue,
                                 v.jitter_prob)
        x = augment.random_grayscale(x, s[3], v.grayscale_prob)
        x = augment.gaussian_blur(x, s[4], v.blur_sigma, v.blur_prob, "three_sigma")
        x = augment.solarize(x, s[5], v.solarize_prob)
        return augment.normalize(tf.clip_by_value(x, 0.0, 1.0), (0.5,) * 3, (0.25,) * 3)

    view = lambda im, s: augment.augment_view(im, s, v, (0.5,) * 3, (0.25,) * 3)
    assert list(augment.OPS) == ["crop", "flip", "jitter", "grayscale", "blur", "solarize"]
    seeds = [_seed(i) for i in range(6)]
    run = RUNNERS[runner]
    for got, want in zip(run(view, uint8, seeds), run(by_hand, uint8, seeds), strict=True):
        np.testing.assert_array_equal(got, want)


def test_seed_split_is_prefix_stable():
    """An op appended to the registry draws split(seed, 7)[6]: the seeds of the ops
    before it, split(seed, 7)[:6], are those of split(seed, 6)."""
    for i in range(4):
        np.testing.assert_array_equal(tf.random.split(_seed(i), 7)[:6],
                                      tf.random.split(_seed(i), 6))


def test_ops_register_once_above_view_spec():
    with pytest.raises(ValueError, match="above ViewSpec"):
        augment.augmentation("late", late_prob=augment.PerCrop(0.0))(lambda x, s, v: x)
    assert "late" not in augment.OPS and "late_prob" not in augment.FIELDS
