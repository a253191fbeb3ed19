"""Image augmentations of the SimCLR/BYOL/DINO family as TF ops.

Every op works eagerly and inside `tf.data.Dataset.map`, and all randomness
comes from a stateless seed (int32/int64 tensor of shape [2]), so a seeded
pipeline reproduces exactly. Between ops an image is float32 [H, W, 3] in
[0, 1]. Probabilities and strengths are Python floats: an op that can never
fire (probability 0, strength 0) is left out of the graph, one that always
fires skips the coin flip, and the others draw a coin and skip the work on
tails with `tf.cond`.

The ops a training crop goes through form a registry (`OPS`, at the end of this
module): each is one function `(image, seed, view) -> image` registered with
`@augmentation(name, **fields)`, the view-group fields it reads with their
defaults and bounds. `ViewSpec`, the fields of `config_defaults.view_group` and
their checks in `sslx.data.views` all derive from it, so a new op is one
registered function here and nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from sslx.errors import ConfigError, close_matches

CROP_ATTEMPTS = 10  # Inception-style crop tries before the center-crop fallback
EVAL_CROP_FRACTION = 0.875  # ImageNet eval: resize to size / 0.875, center-crop size


RESIZE_METHODS = ("bilinear", "bicubic")  # PIL's, which torchvision's crops use
# Gaussian blur kernels: about a tenth of the image side (SimCLR's and BYOL's TF code),
# or the Gaussian out to 3 sigma whatever the image (PIL's ImageFilter.GaussianBlur,
# which the PyTorch code of DINO, iBOT, MoCo v3, SimSiam, Barlow Twins and VICReg use).
BLUR_KERNELS = ("tenth_of_side", "three_sigma")
SOLARIZE_THRESHOLD = 0.5  # BYOL's: pixels at or above it are inverted


def resize(image: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int,
           method: str = "bilinear") -> tf.Tensor:
    """Bilinear or bicubic resize with antialiasing (like PIL) to float32 in [0, 1];
    uint8 input is scaled from [0, 255]. A bilinear enlargement skips the
    antialiasing kernel, which then computes the same pixels (to 1e-5 of a
    level) at twice the cost."""
    def smooth() -> tf.Tensor:
        return tf.image.resize(image, [height, width], method=method, antialias=True)

    if method == "bilinear":
        shape = tf.shape(image)
        shrinks = (shape[0] > height) | (shape[1] > width)
        out = tf.cond(shrinks, smooth, lambda: tf.image.resize(image, [height, width]))
    else:
        out = smooth()
    if image.dtype == tf.uint8:
        out = out / 255.0
    return tf.clip_by_value(out, 0.0, 1.0)


def _maybe(
    fn: Callable[[tf.Tensor], tf.Tensor], image: tf.Tensor, seed: tf.Tensor, prob: float
) -> tf.Tensor:
    """`fn(image)` with probability `prob`, else `image`."""
    if prob <= 0:
        return image
    if prob >= 1:
        return fn(image)
    coin = tf.random.stateless_uniform([], seed)
    return tf.cond(coin < prob, lambda: fn(image), lambda: image)


def _uniform(seed: tf.Tensor, low: float, high: float, shape: Sequence[int] = ()) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _crop_box(
    height: tf.Tensor,
    width: tf.Tensor,
    seed: tf.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(top, left, h, w)` of an Inception-style crop (torchvision's algorithm, all
    tries drawn at once): area fraction uniform in `scale`, aspect ratio
    log-uniform in `ratio`; the first try that fits wins, else a center crop of
    the whole image clamped to the ratio range."""
    area_seed, ratio_seed, offset_seed = tf.unstack(tf.random.split(seed, 3))
    h_img, w_img = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = h_img * w_img * _uniform(area_seed, scale[0], scale[1], [CROP_ATTEMPTS])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(_uniform(ratio_seed, log_low, log_high, [CROP_ATTEMPTS]))
    w = tf.round(tf.sqrt(area * aspect))
    h = tf.round(tf.sqrt(area / aspect))
    fits = (w > 0) & (h > 0) & (w <= w_img) & (h <= h_img)
    first = tf.argmax(tf.cast(fits, tf.int32))
    image_ratio = w_img / h_img
    fallback_w = tf.where(image_ratio > ratio[1], tf.round(h_img * ratio[1]), w_img)
    fallback_h = tf.where(image_ratio < ratio[0], tf.round(w_img / ratio[0]), h_img)
    found = tf.reduce_any(fits)
    h = tf.cast(tf.where(found, h[first], fallback_h), tf.int32)
    w = tf.cast(tf.where(found, w[first], fallback_w), tf.int32)
    slack = tf.stack([height - h, width - w])
    u = _uniform(offset_seed, 0.0, 1.0, [2])
    random_offset = tf.minimum(tf.cast(u * tf.cast(slack + 1, tf.float32), tf.int32), slack)
    offset = tf.where(found, random_offset, slack // 2)  # the fallback is centered
    return offset[0], offset[1], h, w


def random_resized_crop(
    image: tf.Tensor,
    seed: tf.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    method: str = "bilinear",
) -> tf.Tensor:
    """A random crop resized (`method`, one of `RESIZE_METHODS`) to [size, size, 3]
    float32 in [0, 1]. Takes uint8 or [0, 1] float images of any size, or an
    encoded image file (a string scalar, see `decode`): a JPEG then decodes only
    the crop's window. Cropping before the float conversion keeps big images cheap."""
    if image.dtype == tf.string:
        crop = _decode_crop(image, seed, scale, ratio)
    else:
        shape = tf.shape(image)
        top, left, h, w = _crop_box(shape[0], shape[1], seed, scale, ratio)
        crop = image[top:top + h, left:left + w, :]
    return resize(crop, size, size, method)


def decode(image: tf.Tensor) -> tf.Tensor:
    """The uint8 [H, W, 3] pixels of a source example's image: an encoded file
    (JPEG, PNG, GIF, BMP bytes, which folder and TFDS sources yield when
    `config.data.cache` is off) is decoded, pixels pass through."""
    if image.dtype != tf.string:
        return image
    return tf.io.decode_image(image, channels=3, expand_animations=False)


def _decode_crop(contents: tf.Tensor, seed: tf.Tensor, scale: tuple[float, float],
                 ratio: tuple[float, float]) -> tf.Tensor:
    """The crop box of `_crop_box` cut from an encoded image, uint8. A JPEG is
    decoded inside the box only (`decode_and_crop_jpeg`: the rows above and the
    blocks beside it are skipped); another format is decoded whole, then cropped.
    Both give the box the decoded image would get from the same seed."""

    def jpeg() -> tf.Tensor:
        shape = tf.image.extract_jpeg_shape(contents)
        box = tf.stack(_crop_box(shape[0], shape[1], seed, scale, ratio))
        return tf.image.decode_and_crop_jpeg(contents, box, channels=3)

    def other() -> tf.Tensor:
        image = decode(contents)
        shape = tf.shape(image)
        top, left, h, w = _crop_box(shape[0], shape[1], seed, scale, ratio)
        return image[top:top + h, left:left + w, :]

    return tf.cond(tf.io.is_jpeg(contents), jpeg, other)


def random_flip(image: tf.Tensor, seed: tf.Tensor, prob: float = 0.5) -> tf.Tensor:
    """Horizontal flip with probability `prob`."""
    return _maybe(tf.image.flip_left_right, image, seed, prob)


def _gray(image: tf.Tensor) -> tf.Tensor:
    """Luma [H, W, 1] (ITU-R 601 weights, as PIL and torchvision)."""
    return tf.image.rgb_to_grayscale(image)


def _blend(image: tf.Tensor, other: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """`other + factor * (image - other)`, clipped: factor 1 is the identity."""
    return tf.clip_by_value(other + factor * (image - other), 0.0, 1.0)


def _adjust_brightness(image: tf.Tensor, amount: tf.Tensor) -> tf.Tensor:
    return _blend(image, tf.zeros_like(image), amount)


def _adjust_contrast(image: tf.Tensor, amount: tf.Tensor) -> tf.Tensor:
    return _blend(image, tf.reduce_mean(_gray(image)), amount)


def _adjust_saturation(image: tf.Tensor, amount: tf.Tensor) -> tf.Tensor:
    return _blend(image, _gray(image), amount)


def _adjust_hue(image: tf.Tensor, amount: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(tf.image.adjust_hue(image, amount), 0.0, 1.0)


def color_jitter(
    image: tf.Tensor,
    seed: tf.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    prob: float = 1.0,
) -> tf.Tensor:
    """With probability `prob`, brightness/contrast/saturation scaled by factors
    uniform in [1 - s, 1 + s] and hue shifted by up to `hue` (torchvision's
    ColorJitter), applied in a random order per image."""
    gate_seed, factor_seed, order_seed = tf.unstack(tf.random.split(seed, 3))

    def jitter(x: tf.Tensor) -> tf.Tensor:
        u = tf.random.stateless_uniform([4], factor_seed, minval=-1.0, maxval=1.0)
        ops = [
            functools.partial(adjust, amount=value)
            for adjust, strength, value in [
                (_adjust_brightness, brightness, tf.maximum(0.0, 1.0 + brightness * u[0])),
                (_adjust_contrast, contrast, tf.maximum(0.0, 1.0 + contrast * u[1])),
                (_adjust_saturation, saturation, tf.maximum(0.0, 1.0 + saturation * u[2])),
                (_adjust_hue, hue, hue * u[3]),
            ]
            if strength > 0
        ]
        order = tf.argsort(tf.random.stateless_uniform([len(ops)], order_seed))

        def step(position: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return position + 1, tf.switch_case(
                order[position], [functools.partial(op, y) for op in ops]
            )

        # A loop, not an unrolled sequence: each op is traced once, not once per position.
        return tf.while_loop(lambda position, _: position < len(ops), step, (0, x))[1]

    if not any(s > 0 for s in (brightness, contrast, saturation, hue)):
        return image
    return _maybe(jitter, image, gate_seed, prob)


def random_grayscale(image: tf.Tensor, seed: tf.Tensor, prob: float = 0.2) -> tf.Tensor:
    """Luma copied to all three channels with probability `prob`."""
    return _maybe(lambda x: tf.image.grayscale_to_rgb(_gray(x)), image, seed, prob)


def _blur_matrix(n: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """[n, n] matrix that convolves a length-n signal with `kernel` (odd length),
    mirroring it at the borders: the taps that fall outside fold back inside."""
    radius = tf.shape(kernel)[0] // 2
    rows = tf.broadcast_to(tf.range(n)[:, None], [n, 2 * radius + 1])
    cols = rows + tf.range(-radius, radius + 1)[None, :]
    cols = tf.where(cols < 0, -cols - 1, cols)
    cols = tf.where(cols >= n, 2 * n - 1 - cols, cols)
    weights = tf.broadcast_to(kernel[None, :], tf.shape(cols))
    return tf.scatter_nd(tf.stack([rows, cols], axis=-1), weights, [n, n])  # sums folded taps


def _blur(image: tf.Tensor, sigma: tf.Tensor, kernel: str = "tenth_of_side") -> tf.Tensor:
    """Separable Gaussian blur with mirrored borders. Kernel radius (`BLUR_KERNELS`):
    max(1, side // 20), a side of about 10% of the image (SimCLR), or ceil(3 sigma);
    either at most side - 1. Done as two banded matmuls, several times faster on CPU
    than a depthwise convolution."""
    shape = tf.shape(image)
    side = tf.reduce_min(shape[:2])
    radius = (tf.maximum(1, side // 20) if kernel == "tenth_of_side"
              else tf.cast(tf.math.ceil(3.0 * sigma), tf.int32))
    radius = tf.minimum(radius, side - 1)
    taps = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    x = tf.einsum("ij,jwc->iwc", _blur_matrix(shape[0], kernel), image)
    x = tf.einsum("vw,iwc->ivc", _blur_matrix(shape[1], kernel), x)
    return tf.ensure_shape(x, image.shape)


def gaussian_blur(
    image: tf.Tensor,
    seed: tf.Tensor,
    sigma_range: tuple[float, float] = (0.1, 2.0),
    prob: float = 0.5,
    kernel: str = "tenth_of_side",
) -> tf.Tensor:
    """Gaussian blur with sigma uniform in `sigma_range` (pixels), with probability
    `prob`; `kernel` (`BLUR_KERNELS`) sets how far the Gaussian reaches."""
    gate_seed, sigma_seed = tf.unstack(tf.random.split(seed, 2))
    sigma = _uniform(sigma_seed, sigma_range[0], sigma_range[1])
    return _maybe(lambda x: _blur(x, sigma, kernel), image, gate_seed, prob)


def solarize(
    image: tf.Tensor, seed: tf.Tensor, prob: float = 0.2,
    threshold: float = SOLARIZE_THRESHOLD) -> tf.Tensor:
    """Pixels at or above `threshold` inverted, with probability `prob` (BYOL)."""
    return _maybe(lambda x: tf.where(x < threshold, x, 1.0 - x), image, seed, prob)


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """Per-channel `(image - mean) / std`."""
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def center_crop(
    image: tf.Tensor, size: int, crop_fraction: float = EVAL_CROP_FRACTION
) -> tf.Tensor:
    """Shorter side resized to round(size / crop_fraction), then the central
    [size, size] kept (the ImageNet eval convention). float32 in [0, 1]."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = round(size / crop_fraction) / tf.reduce_min(shape)
    height, width = tf.unstack(tf.cast(tf.round(shape * scale), tf.int32))
    resized = resize(image, height, width)
    top, left = (height - size) // 2, (width - size) // 2
    return tf.ensure_shape(resized[top:top + size, left:left + size, :], [size, size, 3])


# ---------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class PerCrop:
    """A float field in [low, high]: one value for all crops of a group, or a tuple
    with one value per crop (BYOL's blur (1.0, 0.1))."""

    default: float
    low: float = 0.0
    high: float = 1.0

    def parse(self, where: str, value: Any, count: int) -> tuple[float, ...]:
        """One value per crop; `ConfigError` naming `where` for a bad value."""
        if not isinstance(value, Sequence):
            values = (float(value),) * count
        elif len(value) == 1:
            values = (float(value[0]),) * count
        elif len(value) == count:
            values = tuple(float(v) for v in value)
        else:
            raise ConfigError(f"{where} has {len(value)} values for count={count}: give one "
                              f"value or {count} (one per crop)")
        bad = [v for v in values if not self.low <= v <= self.high]
        if bad:
            raise ConfigError(f"{where}={bad[0]} must lie within [{self.low}, {self.high}]")
        return values


@dataclasses.dataclass(frozen=True)
class Interval:
    """A (low, high) pair shared by all crops of a group, 0 < low <= high <= at_most."""

    default: tuple[float, float]
    at_most: float = math.inf

    def parse(self, where: str, value: Any, count: int) -> tuple[tuple[float, float], ...]:
        """The pair, once per crop; `ConfigError` naming `where` for a bad value."""
        if not isinstance(value, Sequence) or len(value) != 2:
            raise ConfigError(f"{where}={value!r} must be a (low, high) pair")
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise ConfigError(f"{where}={value!r}: low {low} is above high {high}")
        if low <= 0 or high > self.at_most:
            bounds = ("be positive" if self.at_most == math.inf
                      else f"lie within (0, {self.at_most:g}]")
            raise ConfigError(f"{where}={(low, high)} must {bounds}")
        return ((low, high),) * count


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of `choices`, shared by all crops of a group."""

    default: str
    choices: tuple[str, ...]

    def parse(self, where: str, value: Any, count: int) -> tuple[str, ...]:
        """The choice, once per crop; `ConfigError` naming `where` for another value."""
        if value not in self.choices:
            raise ConfigError(f"{where}={value!r} is not one of {', '.join(self.choices)}"
                              f"{close_matches(str(value), self.choices)}")
        return (value,) * count


Field = PerCrop | Interval | Choice


@dataclasses.dataclass(frozen=True)
class Op:
    """A registered augmentation: `apply(image, seed, view)` reads `fields` of `view`."""

    name: str
    apply: Callable[[tf.Tensor, tf.Tensor, Any], tf.Tensor]
    fields: dict[str, Field]


# In the order a crop goes through them. Op i draws seed i of
# `tf.random.split(seed, len(OPS))`; split is prefix-stable (the first n seeds of a
# split into n + 1 are those of a split into n), so an op appended here leaves
# the seeds, hence the outputs, of the ops before it unchanged.
OPS: dict[str, Op] = {}
# Every op's fields, by name: the per-crop fields of a view group beside count and size.
FIELDS: dict[str, Field] = {}
# Fields of `ViewSpec` that no op owns.
VIEW_FIELDS = ("group", "index", "size")


def augmentation(name: str, **fields: Field):
    """Registers `fn(image, seed, view) -> image` as op `name`, reading `fields` of
    the crop's `ViewSpec` (their defaults are `view_group`'s). Ops apply in the
    order they are registered."""

    def add(fn: Callable[[tf.Tensor, tf.Tensor, Any], tf.Tensor]):
        if "ViewSpec" in globals():
            raise ValueError(f"augmentation {name!r}: register ops in sslx/data/augment.py "
                             "above ViewSpec, which is built from them")
        if name in OPS:
            raise ValueError(f"augmentation {name!r} is registered twice")
        taken = sorted(set(fields) & {*FIELDS, *VIEW_FIELDS, "count"})
        if taken:
            raise ValueError(f"augmentation {name!r}: field {taken[0]} is already a view field")
        OPS[name] = Op(name, fn, dict(fields))
        FIELDS.update(fields)
        return fn

    return add


@augmentation("crop", crop_scale=Interval((0.08, 1.0), at_most=1.0),
              crop_ratio=Interval((3 / 4, 4 / 3)),
              crop_resize=Choice("bilinear", RESIZE_METHODS))
def _crop_view(image: tf.Tensor, seed: tf.Tensor, view: ViewSpec) -> tf.Tensor:
    return random_resized_crop(image, seed, view.size, view.crop_scale, view.crop_ratio,
                               view.crop_resize)


@augmentation("flip", flip_prob=PerCrop(0.5))
def _flip_view(image: tf.Tensor, seed: tf.Tensor, view: ViewSpec) -> tf.Tensor:
    return random_flip(image, seed, view.flip_prob)


@augmentation("jitter", jitter_prob=PerCrop(0.8), brightness=PerCrop(0.4, high=math.inf),
              contrast=PerCrop(0.4, high=math.inf), saturation=PerCrop(0.4, high=math.inf),
              hue=PerCrop(0.1, high=0.5))
def _jitter_view(image: tf.Tensor, seed: tf.Tensor, view: ViewSpec) -> tf.Tensor:
    return color_jitter(image, seed, view.brightness, view.contrast, view.saturation, view.hue,
                        view.jitter_prob)


@augmentation("grayscale", grayscale_prob=PerCrop(0.2))
def _grayscale_view(image: tf.Tensor, seed: tf.Tensor, view: ViewSpec) -> tf.Tensor:
    return random_grayscale(image, seed, view.grayscale_prob)


@augmentation("blur", blur_prob=PerCrop(0.5), blur_sigma=Interval((0.1, 2.0)),
              blur_kernel=Choice("tenth_of_side", BLUR_KERNELS))
def _blur_view(image: tf.Tensor, seed: tf.Tensor, view: ViewSpec) -> tf.Tensor:
    return gaussian_blur(image, seed, view.blur_sigma, view.blur_prob, view.blur_kernel)


@augmentation("solarize", solarize_prob=PerCrop(0.0))
def _solarize_view(image: tf.Tensor, seed: tf.Tensor, view: ViewSpec) -> tf.Tensor:
    return solarize(image, seed, view.solarize_prob)


ViewSpec = dataclasses.make_dataclass(
    "ViewSpec",
    [("group", str), ("index", int), ("size", int),
     *((name, {Interval: "tuple[float, float]", Choice: "str"}.get(type(field), "float"))
       for name, field in FIELDS.items())],
    frozen=True,
)
ViewSpec.__module__ = __name__
ViewSpec.__doc__ = """How one crop is made: a random resized crop of `size` pixels, then
    the other ops of `OPS` in order, each reading its fields (`FIELDS`).
    `group`/`index` say where it came from in `config.views`."""


def augment_view(
    image: tf.Tensor,
    seed: tf.Tensor,
    spec: ViewSpec,
    mean: Sequence[float],
    std: Sequence[float],
) -> tf.Tensor:
    """One crop of a uint8 (or [0, 1] float) image as `spec` describes: the ops of
    `OPS` in order (crop, flip, jitter, grayscale, blur, solarize), each with its own
    seed split from `seed`, then normalize. float32 [size, size, 3]."""
    seeds = tf.unstack(tf.random.split(seed, len(OPS)))
    x = image
    for op, op_seed in zip(OPS.values(), seeds, strict=True):
        x = op.apply(x, op_seed, spec)
    return normalize(tf.clip_by_value(x, 0.0, 1.0), mean, std)


def crop_view(image: tf.Tensor, seed: tf.Tensor, spec: ViewSpec) -> tf.Tensor:
    """The crop `augment_view` would make of `image` from `seed`, alone, in uint8
    [size, size, 3]: the host's part of device augmentation
    (`sslx.data.device_augment`), which does the ops after it."""
    crop = OPS["crop"].apply(image, tf.random.split(seed, len(OPS))[0], spec)
    return tf.cast(tf.round(tf.clip_by_value(crop, 0.0, 1.0) * 255.0), tf.uint8)
