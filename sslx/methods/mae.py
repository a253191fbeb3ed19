"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"; the
official facebookresearch/mae `models_mae.py`).

Each image's patches are shuffled by uniform noise inside the jitted step, from
the step's rng: the first `int(N * (1 - mask_ratio))` of the shuffled order are
kept, the rest masked, so shapes are static and every image and step draws its
own mask. The ViT encoder (the backbone) sees only the kept patches (plus its
class token); a light decoder puts a learned mask token at every masked position,
adds fixed 2-D sin-cos positions, runs its own blocks and predicts each patch's
pixels. The loss (`losses.mae_loss`) is the MSE on the masked patches, against
per-patch normalised pixels with `norm_pix_loss`.

Evaluation and export embed with the whole, unmasked encoder and read its class
token after the final norm: the token MAE's linear probing reads
(`main_linprobe.py`, `global_pool=False`), so k-NN, the probes and the online
monitors see the features the paper's linear figures are of. (MAE's fine-tuning
averages the patch tokens instead; `sslx.methods.supervised` fine-tunes the
class token's features.)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree, init_variables
from sslx.models import inits
from sslx.models.vit import Block, patchify, sincos_2d, unpatchify

# configs/mae_vitb.py: `mae_vit_base_patch16_dec512d8b` with `--norm_pix_loss`.
DEFAULTS = dict(
    mask_ratio=0.75,
    decoder_dim=512,
    decoder_depth=8,
    decoder_heads=16,
    norm_pix_loss=True,
)


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """How many patches the encoder sees: `int(N * (1 - mask_ratio))`, MAE's `len_keep`."""
    return int(num_patches * (1 - mask_ratio))


def random_masking(rng: jax.Array, batch: int, num_patches: int,
                   mask_ratio: float) -> tuple[jax.Array, jax.Array]:
    """`(keep, mask)`: the kept patch indices [B, K] of each image (in the random
    order of its shuffle) and its mask [B, N] (True = masked), from one uniform
    noise per patch sorted per image, as MAE's `random_masking`."""
    noise = jax.random.uniform(rng, (batch, num_patches))
    keep = jnp.argsort(noise, axis=1)[:, :num_kept(num_patches, mask_ratio)]
    rows = jnp.arange(batch)[:, None]
    mask = jnp.ones((batch, num_patches), bool).at[rows, keep].set(False)
    return keep, mask


class Decoder(nn.Module):
    """MAE's decoder: a Linear from the encoder's width, the mask token at every
    masked position, fixed sin-cos positions (the class token's zero), `depth`
    pre-norm blocks, a LayerNorm and a Linear to each patch's pixels. Initialised
    as MAE's `initialize_weights` (Xavier-uniform Linears, q, k and v as one
    Linear; the mask token N(0, 0.02^2))."""

    grid: tuple[int, int]
    patch_dim: int  # pixels per patch, p * p * channels
    dim: int = 512
    depth: int = 8
    num_heads: int = 16
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, keep: jax.Array, *, train: bool) -> jax.Array:
        """Predicted pixels [B, N, patch_dim] of every patch from the encoder's
        tokens [B, 1 + K, D] (class token first) of the kept patches `keep` [B, K]."""
        dense = nn.Dense(self.dim, dtype=self.dtype, kernel_init=inits.xavier_uniform,
                         name="embed")
        x = dense(tokens)
        batch = x.shape[0]
        num_patches = self.grid[0] * self.grid[1]
        mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.dim))
        patches = jnp.broadcast_to(mask_token.astype(x.dtype), (batch, num_patches, self.dim))
        patches = patches.at[jnp.arange(batch)[:, None], keep].set(x[:, 1:])
        patches = patches + jnp.asarray(sincos_2d(*self.grid, self.dim)).astype(x.dtype)
        x = jnp.concatenate([x[:, :1], patches], axis=1)
        for i in range(self.depth):
            x = Block(self.num_heads, dtype=self.dtype, kernel_init=inits.xavier_uniform,
                      qkv_init=inits.xavier_uniform_fused_qkv, name=f"block{i}")(x, train=train)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
        return nn.Dense(self.patch_dim, dtype=self.dtype, kernel_init=inits.xavier_uniform,
                        name="pred")(x[:, 1:])


class MaskedAutoencoder(nn.Module):
    """ViT encoder (`backbone`) -> `decoder`. With `keep` [B, K] the encoder sees only
    those patches and the outputs hold `'prediction'` [B, N, P]; without it, or with
    `features_only`, only the class-token `'features'` of the unmasked image."""

    backbone: nn.Module
    decoder: Decoder

    def __call__(self, x: jax.Array, *, train: bool, keep: jax.Array | None = None,
                 features_only: bool = False) -> dict[str, jax.Array]:
        if features_only or keep is None:
            return {"features": self.backbone(x, train=train)}
        cls, tokens = self.backbone(x, train=train, keep=keep, return_tokens=True)
        tokens = jnp.concatenate([cls[:, None], tokens], axis=1)
        return {"features": cls, "prediction": self.decoder(tokens, keep, train=train)}


@register("mae", defaults=DEFAULTS)
class MAE(Method):
    """Config: `method.mask_ratio`, `method.decoder_dim`, `method.decoder_depth`,
    `method.decoder_heads`, `method.norm_pix_loss`. One view, a ViT backbone (the
    recipes: `model.vit_init='mae'`, `model.pos_embedding='sincos'`). Metrics:
    `masked_share` (the share of patches masked)."""

    batch_level_loss = None  # per-patch MSE; every image masks the same number of patches

    def check_config(self) -> None:
        self.require_views(1)
        cfg = self.config
        if not self.model.name.startswith("vit"):
            raise ConfigError(f"config.model.name={self.model.name!r}: MAE masks patches and "
                              "needs a ViT backbone (vit_t, vit_s, vit_b, vit_l)")
        if not 0 < cfg.mask_ratio < 1:
            raise ConfigError(f"config.method.mask_ratio={cfg.mask_ratio} must be in (0, 1)")
        if num_kept(self.num_patches, cfg.mask_ratio) < 1:
            raise ConfigError(
                f"config.method.mask_ratio={cfg.mask_ratio} keeps no patch of the "
                f"{self.num_patches} of a {self.spec.image_size} px crop: lower it")
        for field in ("decoder_dim", "decoder_depth", "decoder_heads"):
            if not (isinstance(cfg[field], int) and cfg[field] >= 1):
                raise ConfigError(f"config.method.{field}={cfg[field]!r} must be an integer "
                                  ">= 1")
        if cfg.decoder_dim % cfg.decoder_heads or cfg.decoder_dim % 4:
            raise ConfigError(f"config.method.decoder_dim={cfg.decoder_dim} must be divisible "
                              f"by decoder_heads={cfg.decoder_heads} and by 4 (sin-cos "
                              "positions)")

    @property
    def grid(self) -> tuple[int, int]:
        side = self.spec.image_size // self.model.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def network(self) -> MaskedAutoencoder:
        cfg, patch = self.config, self.model.patch_size
        decoder = Decoder(self.grid, patch * patch * 3, cfg.decoder_dim, cfg.decoder_depth,
                          cfg.decoder_heads, self.dtype)
        return MaskedAutoencoder(self.backbone(), decoder)

    def masking(self, rng: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
        """`random_masking` of a batch of this run's crops."""
        return random_masking(rng, batch, self.num_patches, self.config.mask_ratio)

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        images = batch["views"][0]
        keep, _ = self.masking(jax.random.PRNGKey(0), images.shape[0])
        params, batch_stats = init_variables(self.network(), rng, images, keep=keep)
        return params, {"batch_stats": batch_stats}

    def predict(self, params: PyTree, images: jax.Array, rng: jax.Array, *,
                train: bool) -> tuple[jax.Array, jax.Array]:
        """`(prediction [B, N, P], mask [B, N])` of images under a mask drawn from `rng`."""
        mask_rng, dropout_rng = jax.random.split(rng)
        keep, mask = self.masking(mask_rng, images.shape[0])
        outputs = self.network().apply({"params": params}, images, train=train, keep=keep,
                                       rngs={"dropout": dropout_rng})
        return outputs["prediction"], mask

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        images = batch["views"][0]
        prediction, mask = self.predict(params, images, rng, train=True)
        loss = losses.mae_loss(prediction, patchify(images, self.model.patch_size), mask,
                               self.config.norm_pix_loss)
        return loss, (state, {"masked_share": jnp.mean(mask.astype(jnp.float32))})

    def reconstruct(self, params: PyTree, state: PyTree, images: jax.Array,
                    rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(reconstruction, mask)`: images [B, H, W, C] as the decoder predicts them
        under a random mask (mask [B, N], True = masked), in the images' own
        normalisation. With `norm_pix_loss` the decoder predicts normalised patches;
        each is shown with its true patch's mean and deviation put back."""
        del state
        prediction, mask = self.predict(params, images, rng, train=False)
        patch = self.model.patch_size
        target = patchify(images.astype(jnp.float32), patch)
        prediction = prediction.astype(jnp.float32)
        if self.config.norm_pix_loss:  # invert `losses.normalized_patches`
            mean = jnp.mean(target, axis=-1, keepdims=True)
            var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
            prediction = mean + prediction * jnp.sqrt(var + losses.NORM_PIX_EPS)
        return unpatchify(prediction, patch, self.grid), mask
