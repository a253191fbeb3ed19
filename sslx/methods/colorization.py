"""Colorization (Zhang, Isola & Efros 2016, "Colorful Image Colorization", ECCV;
official code richzhang/colorization): from the lightness L of an image, predict
a distribution over the quantised ab colours of every target pixel.

Input: the network is given the normalised RGB crop, as every method, and its
first, parameter-free layer (`lightness_input`) turns it back into colours
(`config.method.input_mean/std`, the data's normalisation) and keeps only CIE L,
scaled to [-1, 1] and tiled over the 3 channels a backbone takes. Training crops,
evaluation images and exported embeddings all go through this one function, so
the backbone only ever sees lightness, and evaluation embeds the pooled
backbone features (as every method) of the grey input.

Output resolution: the paper predicts at a quarter of the input side from a
network that keeps that resolution; a ResNet's last stage is at 1/32 (a ViT's
tokens at 1/patch). Here a 1x1 convolution (`head`) predicts the ab-bin logits
at the backbone's own resolution, and they are upsampled bilinearly, without
parameters, to the quarter-resolution targets (`sslx.data.color`): no decoder of
its own learns the spatial detail, so all of it is asked of the backbone, whose
features are what the method is for. A ViT's patch tokens, reshaped to the patch
grid, are its map; its class token is not in the loss and learns only through
the blocks it shares with them.

Loss (Eq. 2 and 4): the cross-entropy of the predicted distribution against the
soft-encoded target of each pixel, weighted by the rebalancing weight of the
pixel's nearest bin; targets and weights are made in the input pipeline
(`sslx.data.color`), so the loss is `colorization_loss` over the batch's
`color_bins` and `color_weights`, averaged over pixels and images (Caffe's
loss layer sums over pixels; the mean changes the scale only, which Adam
ignores). Metric `top1`: the share of pixels whose most likely bin is the
target's nearest bin.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx.config_defaults import IMAGENET_MEAN, IMAGENET_STD
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree
from sslx.methods.common import forward
from sslx.models import ViT

# configs/colorization_resnet50.py: the paper's class rebalancing (lambda 0.5, Sec. 2.2).
DEFAULTS = dict(
    rebalance_lambda=0.5,  # weight of the uniform distribution in the prior mix; 1: no rebalancing
    prior_examples=1000,   # training images the colour prior is counted on (sslx.data.color)
    input_mean=IMAGENET_MEAN,  # the data's normalisation: recipes link config.data.mean here
    input_std=IMAGENET_STD,
)


def lightness_input(images: jax.Array, mean: tuple[float, ...],
                    std: tuple[float, ...]) -> jax.Array:
    """Normalised sRGB [..., 3] -> CIE L scaled to [-1, 1] ((L - 50) / 50), tiled
    to 3 channels. The same formula as `sslx.data.color.rgb_to_lab`'s L."""
    from sslx.data import color  # TensorFlow: only when a network is traced

    rgb = jnp.clip(images.astype(jnp.float32) * jnp.asarray(std) + jnp.asarray(mean), 0.0, 1.0)
    linear = jnp.where(rgb <= 0.04045, rgb / 12.92,
                       ((jnp.maximum(rgb, 0.04045) + 0.055) / 1.055) ** 2.4)
    y = linear @ jnp.asarray(color.RGB_TO_XYZ[1]) / color.D65_WHITE[1]
    f = jnp.where(y > color.LAB_EPSILON, jnp.cbrt(y), (color.LAB_KAPPA * y + 16) / 116)
    lightness = 116 * f - 16
    return jnp.repeat(((lightness - 50) / 50)[..., None], 3, axis=-1).astype(images.dtype)


def feature_map(backbone: nn.Module, x: jax.Array, *,
                train: bool) -> tuple[jax.Array, jax.Array]:
    """`(pooled features [B, D], spatial map [B, h, w, D])` of a ResNet (its last
    stage) or a ViT (its patch tokens on the patch grid)."""
    if isinstance(backbone, ViT):
        features, tokens = backbone(x, train=train, return_tokens=True)
        side = backbone.patch_size
        grid = (x.shape[1] // side, x.shape[2] // side)
        return features, tokens.reshape(x.shape[0], *grid, tokens.shape[-1])
    return backbone(x, train=train, return_map=True)


class Colorizer(nn.Module):
    """lightness_input -> backbone -> 1x1 `head` to the ab-bin logits per map cell.

    Returns `{'features': pooled [B, D], 'logits': [B, h, w, num_bins]}`;
    `features_only=True` stops after the backbone."""

    backbone: nn.Module
    num_bins: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool,
                 features_only: bool = False) -> dict[str, jax.Array]:
        x = lightness_input(x, self.mean, self.std)
        if features_only:
            return {"features": self.backbone(x, train=train)}
        features, spatial = feature_map(self.backbone, x, train=train)
        logits = nn.Dense(self.num_bins, dtype=self.dtype, name="head")(spatial)
        return {"features": features, "logits": logits}


def colorization_loss(logits: jax.Array, bins: jax.Array,
                      weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(loss, top1)` of logits [B, h, w, Q] against targets at s x s: `bins` int
    [B, s, s, K] (nearest first) with `weights` [B, s, s, K] (soft-encoding times
    rebalancing). The logits are upsampled bilinearly to s x s; the loss is
    -sum_k weights_k log softmax(logits)[bins_k], averaged over pixels and images."""
    batch, side, _, _ = bins.shape
    logits = logits.astype(jnp.float32)
    if logits.shape[1:3] != (side, side):
        logits = jax.image.resize(logits, (batch, side, side, logits.shape[-1]), "bilinear")
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, bins, axis=-1)
    loss = -jnp.mean(jnp.sum(weights * picked, axis=-1))
    top1 = jnp.mean(jnp.argmax(logits, axis=-1) == bins[..., 0])
    return loss, top1


@register("colorization", defaults=DEFAULTS)
class Colorization(Method):
    """Config: `method.rebalance_lambda`, `method.prior_examples`,
    `method.input_mean`, `method.input_std`. One view (`config.views` with one
    crop) whose side is a multiple of 4 and that is never turned grey. Metric:
    `top1` (see the module docstring)."""

    batch_level_loss = None  # cross-entropy per pixel, same count per image
    inputs = ("colorization",)

    def check_config(self) -> None:
        self.require_views(1)
        cfg, crop = self.config, self.spec.crops[0]
        if crop.size % 4:
            raise ConfigError(f"config.views.{crop.group}.size={crop.size} must be a multiple "
                              "of 4: the colour targets are at a quarter of the crop's side")
        if crop.grayscale_prob:
            raise ConfigError(f"config.views.{crop.group}.grayscale_prob={crop.grayscale_prob}: "
                              "a grey crop has no colour to predict; set it to 0.0")
        if not 0 < cfg.rebalance_lambda <= 1:
            raise ConfigError(f"config.method.rebalance_lambda={cfg.rebalance_lambda} must be in "
                              "(0, 1]: the paper's 0.5, or 1.0 for no class rebalancing")
        if not (isinstance(cfg.prior_examples, int) and cfg.prior_examples >= 1):
            raise ConfigError(f"config.method.prior_examples={cfg.prior_examples!r} must be a "
                              "positive integer (training images to count the colour prior on)")
        for field in ("input_mean", "input_std"):
            value = tuple(cfg[field])
            if len(value) != 3 or (field == "input_std" and min(value) <= 0):
                raise ConfigError(f"config.method.{field}={value} must be 3 numbers (positive for "
                                  f"std), the data's; set it to config.data.get_ref"
                                  f"('{field.removeprefix('input_')}') in the recipe")

    def network(self) -> Colorizer:
        from sslx.data.color import ab_bins  # TensorFlow: only when a network is built

        return Colorizer(self.backbone(), len(ab_bins()), tuple(self.config.input_mean),
                         tuple(self.config.input_std), self.dtype)

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        del step
        (outputs,), batch_stats = forward(self.network(), params, state["batch_stats"],
                                          batch["views"], train=True, rng=rng)
        loss, top1 = colorization_loss(outputs["logits"], batch["color_bins"],
                                       batch["color_weights"])
        return loss, ({"batch_stats": batch_stats}, {"top1": top1})
