"""Colour for the colorization pretext task (Zhang, Isola & Efros 2016, "Colorful
Image Colorization"): sRGB <-> CIE Lab in TF ops, the quantised ab bins, the
soft-encoded and rebalanced targets, and the producer that makes them.

Lab is CIE 1976 L*a*b* of sRGB (IEC 61966-2-1 transfer curve and primaries)
under the D65 white, the conversion skimage's `rgb2lab` (which the official
code uses) performs. The network predicts a distribution over the ab bins of a
grid of side 10 that hold colours of the sRGB gamut (the paper's 313 bins; see
`ab_bins`), trained with the paper's multinomial cross-entropy rather than a
regression of ab: the regression's mean of several plausible colours is grey,
which is what the paper's classification and rebalancing are there to avoid.

Targets (Sec. 2.1 and the official `NNEncLayer` and `PriorBoostLayer`): each
target pixel's ab is soft-encoded over its 5 nearest bins with Gaussian weights
of sigma 5, and weighted by the rebalancing weight of its nearest bin, w ~
((1 - lambda) p + lambda / Q)^-1 normalised so that E_p[w] = 1, where p is the
empirical prior of the training colours smoothed by a Gaussian of sigma 5 over
the ab plane. The paper's prior, counted over all of ImageNet, is not shipped
with this library; the prior here is counted over the first
`config.method.prior_examples` images of the training split (the same images on
every host), read once when the input pipeline is built.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np
import tensorflow as tf

from sslx.data.augment import augment_view, decode, normalize, resize
from sslx.data.producers import Example, producer
from sslx.data.sources import load_split
from sslx.errors import ConfigError

if TYPE_CHECKING:
    from sslx.data.spec import InputSpec

# sRGB (linear) -> XYZ, IEC 61966-2-1, and the D65 white point.
RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
              (0.2126729, 0.7151522, 0.0721750),
              (0.0193339, 0.1191920, 0.9503041))
D65_WHITE = (0.95047, 1.0, 1.08883)
LAB_EPSILON = 216 / 24389  # CIE: where f(t) turns from linear to a cube root
LAB_KAPPA = 24389 / 27

GRID = 10.0           # side of an ab bin (Sec. 2.1)
NEIGHBOURS = 5        # bins a target pixel is soft-encoded over
SIGMA = 5.0           # of the soft-encoding and of the prior's smoothing
TARGET_STRIDE = 4     # targets at a quarter of the crop's side, as the paper predicts
# sRGB levels sampled to find the in-gamut bins: every third of 0..255 (86^3 colours).
_GAMUT_LEVELS = np.arange(0, 256, 3) / 255.0
_PRIOR_BATCH = 64


def srgb_to_linear(rgb: tf.Tensor) -> tf.Tensor:
    """The sRGB transfer curve inverted: [0, 1] sRGB -> linear light."""
    return tf.where(rgb <= 0.04045, rgb / 12.92,
                    tf.pow((tf.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4))


def linear_to_srgb(linear: tf.Tensor) -> tf.Tensor:
    """Linear light -> sRGB in [0, 1] (out-of-gamut values clipped)."""
    linear = tf.clip_by_value(linear, 0.0, 1.0)
    return tf.where(linear <= 0.0031308, 12.92 * linear,
                    1.055 * tf.pow(tf.maximum(linear, 0.0031308), 1 / 2.4) - 0.055)


def rgb_to_lab(rgb: tf.Tensor) -> tf.Tensor:
    """float sRGB [..., 3] in [0, 1] -> Lab [..., 3]: L in [0, 100], a and b about
    [-110, 110]."""
    xyz = tf.linalg.matvec(tf.constant(RGB_TO_XYZ, tf.float32),
                           srgb_to_linear(tf.cast(rgb, tf.float32)))
    t = xyz / tf.constant(D65_WHITE, tf.float32)
    f = tf.where(t > LAB_EPSILON, tf.pow(tf.maximum(t, LAB_EPSILON), 1 / 3),
                 (LAB_KAPPA * t + 16) / 116)
    fx, fy, fz = tf.unstack(f, axis=-1)
    return tf.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: tf.Tensor) -> tf.Tensor:
    """Lab [..., 3] -> sRGB [..., 3] in [0, 1], colours outside the gamut clipped."""
    lightness, a, b = tf.unstack(tf.cast(lab, tf.float32), axis=-1)
    fy = (lightness + 16) / 116
    f = tf.stack([fy + a / 500, fy, fy - b / 200], axis=-1)
    t = tf.where(f > LAB_EPSILON ** (1 / 3), f ** 3, (116 * f - 16) / LAB_KAPPA)
    xyz = t * tf.constant(D65_WHITE, tf.float32)
    linear = tf.linalg.matvec(tf.constant(np.linalg.inv(RGB_TO_XYZ), tf.float32), xyz)
    return linear_to_srgb(linear)


@functools.cache
def ab_bins() -> np.ndarray:
    """float32 [Q, 2]: the centres (multiples of `GRID`) of the ab bins that hold a
    colour of the sRGB gamut, in a fixed order (by a, then b).

    Found by converting a dense grid of sRGB colours (`_GAMUT_LEVELS`, every level
    3/255 apart on each channel) to Lab and keeping every bin an ab of it rounds
    to. The paper's 313 bins came from its own gamut test, which it does not spell
    out; this set is deterministic and covers the gamut (tests/test_colorization.py)."""
    levels = _GAMUT_LEVELS.astype(np.float32)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    with tf.init_scope():  # eager even when first asked for inside a tf.data map
        ab = rgb_to_lab(tf.constant(grid)).numpy()[:, 1:]
    return np.unique(np.round(ab / GRID) * GRID, axis=0).astype(np.float32)


def nearest_bins(ab: tf.Tensor, count: int = NEIGHBOURS) -> tuple[tf.Tensor, tf.Tensor]:
    """`(bins int32 [..., count], squared distances [..., count])` of the `count`
    bins nearest to each ab [..., 2], nearest first."""
    bins = tf.constant(ab_bins())
    distances = tf.reduce_sum(tf.square(ab[..., None, :] - bins), axis=-1)
    negative, indices = tf.math.top_k(-distances, k=count)
    return indices, -negative


def soft_encode(ab: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(bins int32 [..., 5], weights [..., 5])`: the ab of each pixel as a
    distribution over its 5 nearest bins, Gaussian in the distance (sigma 5),
    summing to 1, nearest bin first."""
    indices, distances = nearest_bins(ab)
    weights = tf.nn.softmax(-distances / (2 * SIGMA ** 2), axis=-1)
    return indices, weights


def smooth_prior(counts: np.ndarray) -> np.ndarray:
    """The empirical distribution of `counts` [Q] over the bins, smoothed by a
    Gaussian of sigma 5 over the ab plane (restricted to the bins, renormalised)."""
    bins = ab_bins().astype(np.float64)
    squared = np.sum(np.square(bins[:, None] - bins[None]), axis=-1)
    smoothed = np.exp(-squared / (2 * SIGMA ** 2)) @ (counts / np.sum(counts))
    return smoothed / np.sum(smoothed)


def rebalancing_weights(prior: np.ndarray, mix: float) -> np.ndarray:
    """float32 [Q]: w ~ ((1 - mix) prior + mix / Q)^-1, scaled so that
    sum(prior * w) = 1 (Eq. 4); all ones for mix = 1."""
    weights = 1.0 / ((1.0 - mix) * prior + mix / len(prior))
    return (weights / np.sum(prior * weights)).astype(np.float32)


def target_side(size: int) -> int:
    """Side of the target of a crop of side `size`."""
    return size // TARGET_STRIDE


def make_targets(rgb: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(bins int32 [s, s, 5], weights [s, s, 5])` of an sRGB crop [S, S, 3] in
    [0, 1], s = S / 4: the ab of every fourth pixel (the official code subsamples
    the same way), soft-encoded, times the rebalancing weight (`weights`, [Q]) of
    its nearest bin."""
    ab = rgb_to_lab(rgb[::TARGET_STRIDE, ::TARGET_STRIDE])[..., 1:]
    bins, soft = soft_encode(ab)
    return bins, soft * tf.gather(weights, bins[..., 0])[..., None]


def estimate_prior(images: tf.data.Dataset, size: int) -> np.ndarray:
    """float64 [Q]: the smoothed prior (`smooth_prior`) of the target pixels of
    `images` (uint8 [H, W, 3]), each resized to `size` as evaluation does; eager."""

    def nearest(image: tf.Tensor) -> tf.Tensor:
        rgb = resize(image, size, size)[::TARGET_STRIDE, ::TARGET_STRIDE]
        return nearest_bins(rgb_to_lab(rgb)[..., 1:], count=1)[0]

    counts = np.zeros(len(ab_bins()), np.int64)
    for bins in images.map(nearest).batch(_PRIOR_BATCH).as_numpy_iterator():
        counts += np.bincount(bins.ravel(), minlength=len(counts))
    if not counts.sum():
        raise ConfigError("config.method.prior_examples: the training split gave no images "
                          "to count the colour prior on")
    return smooth_prior(counts)


def training_weights(config: ml_collections.ConfigDict, size: int) -> np.ndarray:
    """The rebalancing weights [Q] of a run: ones when
    `config.method.rebalance_lambda` is 1, else from the prior of its first
    `prior_examples` training images (counted once per process and data)."""
    mix = float(config.method.rebalance_lambda)
    if mix == 1.0:
        return np.ones(len(ab_bins()), np.float32)
    key = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
    return rebalancing_weights(_training_prior(key, size, config.method.prior_examples), mix)


@functools.cache
def _training_prior(data_json: str, size: int, examples: int) -> np.ndarray:
    data = ml_collections.ConfigDict(json.loads(data_json))
    with tf.init_scope():  # eager: asked for while the pipeline's map is traced
        source = load_split(data, data.train_split, process_index=0, process_count=1)
        images = source.dataset.take(examples).map(lambda example: decode(example["image"]))
        return estimate_prior(images, size)


def _check_input(config: ml_collections.ConfigDict) -> None:
    """The network un-normalises its input with `config.method.input_mean/std`:
    they must be the data's normalisation."""
    for field in ("mean", "std"):
        method_value = tuple(config.method[f"input_{field}"])
        if not np.allclose(method_value, tuple(config.data[field])):
            raise ConfigError(
                f"config.method.input_{field}={method_value} differs from config.data.{field}="
                f"{tuple(config.data[field])}: the network turns normalised images back into "
                f"colours with it; set config.method.input_{field} = "
                f"config.data.get_ref('{field}') in the recipe")


def _outputs(spec: InputSpec) -> dict[str, Any]:
    crop = spec.crops[0]
    side = target_side(crop.size)
    return {"views": (tf.TensorSpec([crop.size, crop.size, 3], tf.float32),),
            "color_bins": tf.TensorSpec([side, side, NEIGHBOURS], tf.int32),
            "color_weights": tf.TensorSpec([side, side, NEIGHBOURS], tf.float32)}


@producer("colorization", stream=7_000_019, outputs=_outputs)
def _colorization(example: Example, seed: tf.Tensor, spec: InputSpec,
                  config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`{'views': (normalised RGB crop,), 'color_bins', 'color_weights'}`: one crop
    of the run's first crop spec and the rebalanced soft-encoded ab of that very
    crop at a quarter of its side. The crop is given in colour, normalised as every
    view: the network takes its L channel itself (`sslx.methods.colorization`), so
    evaluation images, which arrive normalised, are embedded the same way."""
    _check_input(config)
    crop = spec.crops[0]
    weights = tf.constant(training_weights(config, crop.size))
    rgb = augment_view(example["image"], seed, crop, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    bins, target_weights = make_targets(rgb, weights)
    return {"views": (normalize(rgb, tuple(config.data.mean), tuple(config.data.std)),),
            "color_bins": bins, "color_weights": target_weights}
