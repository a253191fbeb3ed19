"""The augmentations after the crop as jitted JAX ops: `config.data.augment_on='device'`.

On a TPU host a few CPU cores feed several chips, and the colour ops of a
SimCLR or DINO view cost more host time than its decode. With device
augmentation the host decodes and makes each view's random resized crop only,
in uint8 (`sslx.data.views.make_crops`, a quarter of the float bytes to move);
the train step then runs flip, colour jitter, grayscale, blur and solarization
here, per example, drawn from the step's rng, and normalises (`finish_batch`).

Each op reads the same `ViewSpec` fields as its TF twin in `sslx.data.augment`
and has the same distribution: the same coin probabilities, factor ranges,
random jitter order, blur kernels and mirrored borders (the tests compare the
ops at fixed parameters and their moments over many draws). The draws differ,
as they come from JAX's rng rather than TF's stateless seeds. dm-pix supplies
the ops whose definitions already match (hue rotation in HSV, Rec. 601 luma,
flip, solarization); the blends are torchvision's, as on the host.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import dm_pix as pix
import jax
import jax.numpy as jnp

from sslx.data.augment import OPS, SOLARIZE_THRESHOLD, ViewSpec
from sslx.errors import ConfigError

if TYPE_CHECKING:
    from sslx.data.spec import InputSpec

AUGMENT_ON = ("host", "device")
# Folded into the step's rng for the views' draws, so the method's rng is unchanged.
_AUGMENT_STREAM = 0x5EED

DeviceOp = Callable[[jax.Array, jax.Array, ViewSpec], jax.Array]
# The device twin of every op of `sslx.data.augment.OPS` but the crop.
DEVICE_OPS: dict[str, DeviceOp] = {}


def device_op(name: str):
    """Registers `fn(image, key, view) -> image` as the device twin of host op `name`."""

    def add(fn: DeviceOp) -> DeviceOp:
        if name not in OPS or name == "crop":
            raise ValueError(f"device op {name!r}: no such host op after the crop in "
                             "sslx.data.augment.OPS")
        DEVICE_OPS[name] = fn
        return fn

    return add


def after_crop() -> tuple[str, ...]:
    """The host ops after the crop, in order; `ConfigError` for one with no device twin."""
    names = tuple(name for name in OPS if name != "crop")
    missing = [name for name in names if name not in DEVICE_OPS]
    if missing:
        raise ConfigError(f"config.data.augment_on='device': the augmentation {missing[0]!r} "
                          "has no device twin in sslx/data/device_augment.py; set "
                          "config.data.augment_on='host'")
    return names


def finish_batch(batch: dict[str, Any], rng: jax.Array, spec: InputSpec) -> dict[str, Any]:
    """With `spec.augment_on == 'device'`, `batch` with its uint8 'views' augmented
    and normalised as the host would (float32, one per crop of `spec.crops`, by
    `spec.mean` and `spec.std`), the draws from `rng`, one key per view and
    example; otherwise `batch` as it is."""
    if spec.augment_on != "device":
        return batch
    rng = jax.random.fold_in(rng, _AUGMENT_STREAM)
    finished = tuple(
        augment_views(view, jax.random.fold_in(rng, index), crop, spec.mean, spec.std)
        for index, (view, crop) in enumerate(zip(batch["views"], spec.crops, strict=True)))
    return {**batch, "views": finished}


def augment_views(views: jax.Array, rng: jax.Array, crop: ViewSpec, mean: Sequence[float],
                  std: Sequence[float]) -> jax.Array:
    """uint8 [N, size, size, 3] crops -> float32 augmented and normalised, each
    example with its own key split from `rng`."""
    keys = jax.random.split(rng, views.shape[0])
    return jax.vmap(functools.partial(augment_image, view=crop, mean=mean, std=std))(views, keys)


def augment_image(image: jax.Array, key: jax.Array, view: ViewSpec, mean: Sequence[float],
                  std: Sequence[float]) -> jax.Array:
    """One uint8 (or [0, 1] float) crop through the ops after the crop, each with its
    own key, then clipped and normalised: float32 [size, size, 3]."""
    x = image.astype(jnp.float32)
    if image.dtype == jnp.uint8:
        x = x / 255.0
    names = after_crop()
    for name, op_key in zip(names, jax.random.split(key, len(names)), strict=True):
        x = DEVICE_OPS[name](x, op_key, view)
    x = jnp.clip(x, 0.0, 1.0)
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _maybe(fn: Callable[[jax.Array], jax.Array], image: jax.Array, key: jax.Array,
           prob: float) -> jax.Array:
    """`fn(image)` with probability `prob`, else `image` (an op that can never fire
    is left out, one that always fires skips the coin)."""
    if prob <= 0:
        return image
    if prob >= 1:
        return fn(image)
    return jnp.where(jax.random.uniform(key) < prob, fn(image), image)


def _gray(image: jax.Array) -> jax.Array:
    return pix.rgb_to_grayscale(image)  # [H, W, 1], Rec. 601 as tf.image's


def _blend(image: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
    return jnp.clip(other + factor * (image - other), 0.0, 1.0)


def adjust_brightness(image: jax.Array, amount: jax.Array) -> jax.Array:
    return _blend(image, jnp.zeros_like(image), amount)


def adjust_contrast(image: jax.Array, amount: jax.Array) -> jax.Array:
    return _blend(image, jnp.mean(_gray(image)), amount)


def adjust_saturation(image: jax.Array, amount: jax.Array) -> jax.Array:
    return _blend(image, _gray(image), amount)


def adjust_hue(image: jax.Array, amount: jax.Array) -> jax.Array:
    return jnp.clip(pix.adjust_hue(image, amount), 0.0, 1.0)


def blur(image: jax.Array, sigma: jax.Array, kernel: str, max_sigma: float) -> jax.Array:
    """Separable Gaussian blur with mirrored borders, the kernel of
    `sslx.data.augment._blur`. The kernel's length is static: the radius the
    largest sigma needs, with the taps beyond this sigma's radius zeroed."""
    side = min(image.shape[:2])
    if kernel == "tenth_of_side":
        reach = max(1, side // 20)
        radius = jnp.asarray(reach)
    else:
        reach = math.ceil(3.0 * max_sigma)
        radius = jnp.ceil(3.0 * sigma)
    reach = min(reach, side - 1)
    taps = jnp.arange(-reach, reach + 1, dtype=jnp.float32)
    weights = jnp.where(jnp.abs(taps) <= jnp.minimum(radius, side - 1),
                        jnp.exp(-0.5 * jnp.square(taps / sigma)), 0.0)
    weights = weights / jnp.sum(weights)
    for axis in (0, 1):
        padding = [(0, 0)] * image.ndim
        padding[axis] = (reach, reach)
        padded = jnp.pad(image, padding, mode="symmetric")
        length = image.shape[axis]
        image = sum(weights[t] * jax.lax.slice_in_dim(padded, t, t + length, axis=axis)
                    for t in range(2 * reach + 1))
    return image


@device_op("flip")
def _flip(image: jax.Array, key: jax.Array, view: ViewSpec) -> jax.Array:
    return _maybe(pix.flip_left_right, image, key, view.flip_prob)


@device_op("jitter")
def _jitter(image: jax.Array, key: jax.Array, view: ViewSpec) -> jax.Array:
    """torchvision's ColorJitter in a random order per example, as on the host."""
    gate_key, factor_key, order_key = jax.random.split(key, 3)
    u = jax.random.uniform(factor_key, (4,), minval=-1.0, maxval=1.0)
    ops = [
        functools.partial(adjust, amount=value)
        for adjust, strength, value in [
            (adjust_brightness, view.brightness, jnp.maximum(0.0, 1.0 + view.brightness * u[0])),
            (adjust_contrast, view.contrast, jnp.maximum(0.0, 1.0 + view.contrast * u[1])),
            (adjust_saturation, view.saturation, jnp.maximum(0.0, 1.0 + view.saturation * u[2])),
            (adjust_hue, view.hue, view.hue * u[3]),
        ]
        if strength > 0
    ]
    if not ops:
        return image
    order = jnp.argsort(jax.random.uniform(order_key, (len(ops),)))

    def jitter(x: jax.Array) -> jax.Array:
        for position in range(len(ops)):
            x = jax.lax.switch(order[position], ops, x)
        return x

    return _maybe(jitter, image, gate_key, view.jitter_prob)


@device_op("grayscale")
def _grayscale(image: jax.Array, key: jax.Array, view: ViewSpec) -> jax.Array:
    return _maybe(lambda x: pix.rgb_to_grayscale(x, keep_dims=True), image, key,
                  view.grayscale_prob)


@device_op("blur")
def _blur(image: jax.Array, key: jax.Array, view: ViewSpec) -> jax.Array:
    gate_key, sigma_key = jax.random.split(key)
    low, high = view.blur_sigma
    sigma = jax.random.uniform(sigma_key, minval=low, maxval=high)
    return _maybe(lambda x: blur(x, sigma, view.blur_kernel, high), image, gate_key,
                  view.blur_prob)


@device_op("solarize")
def _solarize(image: jax.Array, key: jax.Array, view: ViewSpec) -> jax.Array:
    return _maybe(lambda x: pix.solarize(x, SOLARIZE_THRESHOLD), image, key, view.solarize_prob)
