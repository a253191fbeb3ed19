"""Blockwise patch masks for masked-image modelling (iBOT), made in the tf.data pipeline.

A recipe configures them with `config.masks = mask_config(...)` (parsed once into
`InputSpec.masks`); a method that lists "masks" in its `inputs` (iBOT) then gets
`'masks'` in its batches (the "masks" producer, `sslx.data.producers`): one
bool [B, N] array per global crop (True = masked patch, N the patches of the
backbone's grid: global crop size // `config.model.patch_size`, squared).

Per image and crop: with probability `prob` a target ratio r ~ U(ratio) is drawn,
otherwise nothing is masked; blocks are then added as in BEiT's masking generator
(Bao et al. 2022, Alg. 1; iBOT's `ImageFolderMask` with `pred_shape='block'`):
each block has an area ~ U((min(H, W) // 3)^2, patches still to mask) and a
log-uniform aspect ratio in `aspect`; a block is kept when it adds between 1 and
the still-missing number of patches; masking stops at r * N patches or after 10
rejected blocks in a row. So at most r * N patches end up masked.

All ops are stateless TF ops seeded by a [2] int seed: they run eagerly and
inside `tf.data.Dataset.map`, and the same seed gives the same mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import ml_collections
import tensorflow as tf

from sslx.errors import ConfigError

# Rejected blocks in a row after which a mask is final (BEiT, iBOT).
MAX_REJECTIONS = 10


def mask_config(
    prob: float = 0.5,
    ratio: tuple[float, float] = (0.1, 0.5),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> ml_collections.ConfigDict:
    """The `config.masks` section. Defaults: iBOT's ViT recipes (`--pred_ratio 0 0.3
    --pred_ratio_var 0 0.2`: no mask or r ~ U(0.1, 0.5), each with probability 0.5;
    block aspect ratios in (0.3, 1/0.3))."""
    return ml_collections.ConfigDict(dict(prob=prob, ratio=ratio, aspect=aspect))


class MaskLayout(NamedTuple):
    """Masks per example (one per global crop) over a `grid` of patches."""

    count: int
    grid: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


def mask_layout(masks: ml_collections.ConfigDict, *, size: int, count: int,
                patch_size: int) -> MaskLayout:
    """The masks of `count` global crops of `size` px cut in patches of `patch_size`,
    as `config.masks` (checked here) asks for them; `sslx.data.spec.input_spec`
    calls it once per run. `ConfigError` for unusable mask settings."""
    check_mask_config(masks)
    if patch_size < 1 or size % patch_size:
        raise ConfigError(f"config.masks: the global crops ({size} px) are not a whole number "
                          f"of patches of config.model.patch_size={patch_size}")
    return MaskLayout(count=count, grid=(size // patch_size, size // patch_size))


def check_mask_config(masks: ml_collections.ConfigDict) -> None:
    if not 0.0 <= masks.prob <= 1.0:
        raise ConfigError(f"config.masks.prob={masks.prob} must lie within [0, 1]")
    low, high = _pair("ratio", masks.ratio)
    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(f"config.masks.ratio={tuple(masks.ratio)} must satisfy "
                          "0 <= low <= high <= 1")
    low, high = _pair("aspect", masks.aspect)
    if not 0.0 < low <= high:
        raise ConfigError(f"config.masks.aspect={tuple(masks.aspect)} must satisfy "
                          "0 < low <= high")


def make_masks(seed: tf.Tensor, layout: MaskLayout,
               masks: ml_collections.ConfigDict) -> tuple[tf.Tensor, ...]:
    """`layout.count` independent flat masks bool [N] of one example."""
    seeds = tf.unstack(tf.random.split(seed, layout.count))
    return tuple(
        tf.reshape(block_mask(s, layout.grid, masks.prob, tuple(masks.ratio),
                              tuple(masks.aspect)), [-1])
        for s in seeds
    )


def block_mask(
    seed: tf.Tensor,
    grid: tuple[int, int],
    prob: float,
    ratio: tuple[float, float],
    aspect: tuple[float, float],
) -> tf.Tensor:
    """One bool [H, W] blockwise mask (see the module docstring)."""
    height, width = grid
    draw_seed, loop_seed = tf.unstack(tf.random.split(seed, 2))
    coin, r = tf.unstack(tf.random.stateless_uniform([2], draw_seed))
    r = ratio[0] + r * (ratio[1] - ratio[0])
    target = tf.where(coin < prob, r * (height * width), 0.0)
    min_area = float((min(height, width) // 3) ** 2)
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]

    def propose(mask: tf.Tensor, count: tf.Tensor, rejections: tf.Tensor, attempt: tf.Tensor):
        u = tf.random.stateless_uniform([4], tf.random.fold_in(loop_seed, attempt))
        missing = target - tf.cast(count, tf.float32)
        area = min_area + u[0] * (missing - min_area)  # U(min_area, missing), either order
        ratio_hw = tf.exp(log_aspect[0] + u[1] * (log_aspect[1] - log_aspect[0]))
        h = tf.cast(tf.round(tf.sqrt(area * ratio_hw)), tf.int32)
        w = tf.cast(tf.round(tf.sqrt(area / ratio_hw)), tf.int32)
        fits = (h < height) & (w < width)
        top = tf.cast(tf.floor(u[2] * tf.cast(height - h + 1, tf.float32)), tf.int32)
        left = tf.cast(tf.floor(u[3] * tf.cast(width - w + 1, tf.float32)), tf.int32)
        block = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        added = tf.reduce_sum(tf.cast(block & ~mask, tf.int32))
        accept = fits & (added > 0) & (tf.cast(added, tf.float32) <= missing)
        mask = tf.where(accept, mask | block, mask)
        count = count + tf.where(accept, added, 0)
        rejections = tf.where(accept, 0, rejections + 1)
        return mask, count, rejections, attempt + 1

    def unfinished(mask, count, rejections, attempt):
        del mask, attempt
        return (tf.cast(count, tf.float32) < target) & (rejections < MAX_REJECTIONS)

    mask, *_ = tf.while_loop(
        unfinished, propose,
        (tf.zeros([height, width], tf.bool), tf.constant(0), tf.constant(0), tf.constant(0)))
    return mask


def _pair(field: str, value: Sequence[float]) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"config.masks.{field}={value!r} must be a (low, high) pair")
    return float(value[0]), float(value[1])
