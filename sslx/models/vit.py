"""Vision Transformer backbone (class token, pre-norm blocks), as in DINO/MoCo v3/MAE.

Multi-crop methods feed one network crops of several resolutions, so the
position embeddings are stored for the native grid (`image_size`) and resized
to the grid of each input; at the native grid they are used as stored.

Two initialisations (`weight_init`), each as its official code draws it:
- `trunc_normal` (timm's `_init_weights`, DINO, iBOT): every Linear, the class
  token and the learned positions N(0, 0.02^2); the patch convolution keeps
  PyTorch's default U(+-1/sqrt(fan_in)), its bias too.
- `xavier` (MoCo v3's `vits.py`): Xavier-uniform Linears, q, k and v each as its
  own D x D matrix; the patch projection Xavier as a linear layer over the
  pixels of a patch; the class token N(0, 1e-6^2).
- `mae` (MAE's `models_mae.py`): Xavier-uniform Linears with q, k and v drawn as
  the one D x 3D Linear timm builds (a smaller bound than `xavier`'s); the patch
  projection as `xavier`, its bias PyTorch's default; the class token N(0, 0.02^2).
Every other bias starts at 0 and LayerNorms at (1, 0).

MAE's encoder sees only the patches it keeps (`keep`), and its decoder
(`sslx.methods.mae`) works on the patch layout of `patchify`.

Two ways of running the blocks, for memory and compile time on deep models:
- `remat` (`config.model.remat`): each block under `nn.remat` (default policy:
  nothing saved), so the backward pass recomputes a block's activations instead
  of keeping them; the same parameters and values.
- `scan` (`config.model.scan`): the blocks as one `nn.scan`, traced and compiled
  once instead of `depth` times. Their parameters are then one `blocks` module
  whose leaves have a leading `depth` axis (`blocks/fc1/kernel` [depth, D, 4D]
  for `block{i}/fc1/kernel` [D, 4D]), so checkpoints of the two layouts do not
  load into each other, per-block optimizer rules cannot name one block, and the
  last block's attention cannot be sown (`sslx.config_checks` refuses those).
  The per-block stochastic-depth rates are a scanned input; the random draws of
  initialisation and of drop-path differ from the unscanned model's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from sslx.errors import ConfigError
from sslx.models import inits
from sslx.models.inits import Initializer

POS_EMBEDDINGS = ("learned", "sincos")


class Inits(NamedTuple):
    """The initialisers of one ViT initialisation scheme."""

    dense: Initializer  # every Linear but q, k, v: attention output, MLP
    qkv: Initializer  # the q, k and v projections
    patch: Initializer  # the patch-embedding convolution
    patch_bias: Callable[[int], Initializer]  # of its fan-in
    cls_token: Initializer


INITS = {
    "trunc_normal": Inits(inits.torch_trunc_normal, inits.torch_trunc_normal,
                          inits.torch_default_kernel, inits.torch_default_bias,
                          inits.torch_trunc_normal),
    "xavier": Inits(inits.xavier_uniform, inits.xavier_uniform, inits.xavier_uniform_patch,
                    inits.zero_bias, nn.initializers.normal(1e-6)),
    "mae": Inits(inits.xavier_uniform, inits.xavier_uniform_fused_qkv,
                 inits.xavier_uniform_patch, inits.torch_default_bias,
                 nn.initializers.normal(0.02)),
}


class Variant(NamedTuple):
    hidden_dim: int
    depth: int
    num_heads: int


VARIANTS = {
    "T": Variant(192, 12, 3),
    "S": Variant(384, 12, 6),
    "B": Variant(768, 12, 12),
    "L": Variant(1024, 24, 16),
}


def sincos_2d(grid_h: int, grid_w: int, dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding [grid_h*grid_w, dim] (MoCo v3):
    a quarter of the channels each for sin/cos of the column and the row index."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4) / (dim // 4))
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    out_w = cols.reshape(-1, 1) * omega
    out_h = rows.reshape(-1, 1) * omega
    return np.concatenate(
        [np.sin(out_w), np.cos(out_w), np.sin(out_h), np.cos(out_h)], axis=1
    ).astype(np.float32)


def patchify(images: jnp.ndarray, patch_size: int) -> jnp.ndarray:
    """Images [B, H, W, C] -> patches [B, (H/p)*(W/p), p*p*C], row-major over the
    grid, each patch's pixels row-major then channel (MAE's `patchify` order)."""
    return einops.rearrange(images, "b (h p) (w q) c -> b (h w) (p q c)", p=patch_size,
                            q=patch_size)


def unpatchify(patches: jnp.ndarray, patch_size: int, grid: tuple[int, int]) -> jnp.ndarray:
    """The inverse of `patchify` for a (rows, columns) `grid` of patches."""
    return einops.rearrange(patches, "b (h w) (p q c) -> b (h p) (w q) c", h=grid[0], w=grid[1],
                            p=patch_size, q=patch_size)


def resize_pos_embedding(
    pos: jnp.ndarray, from_grid: tuple[int, int], to_grid: tuple[int, int]
) -> jnp.ndarray:
    """Patch position embeddings [h*w, D] on `from_grid` resized bicubically to
    `to_grid` as DINO does for its small crops (no anti-aliasing, like the
    reference; jax's cubic kernel has a=-0.5 where torch's has -0.75), and
    returned untouched when the grids are equal."""
    if tuple(from_grid) == tuple(to_grid):
        return pos
    grid = einops.rearrange(pos, "(h w) d -> h w d", h=from_grid[0], w=from_grid[1])
    resized = jax.image.resize(grid, (*to_grid, pos.shape[-1]), method="bicubic",
                               antialias=False)
    return einops.rearrange(resized, "h w d -> (h w) d")


class Block(nn.Module):
    """Pre-norm transformer block; `drop_path` drops each sample's residual
    branches (stochastic depth), which is `nn.Dropout` broadcast over tokens."""

    num_heads: int
    mlp_ratio: int = 4
    drop_path: float = 0.0
    dtype: Any = jnp.float32
    kernel_init: Initializer = inits.torch_trunc_normal
    qkv_init: Initializer | None = None  # None: `kernel_init`

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool, sow_attention: bool = False,
                 drop_path_rate: jnp.ndarray | None = None) -> jnp.ndarray:
        """`sow_attention`: the attention weights [B, heads, T, T] go to the
        `intermediates` collection as `attn/attention_weights` (for pictures).
        `drop_path_rate`: a traced rate replacing `drop_path` (a scanned ViT's
        per-block rates, which `nn.Dropout` cannot take)."""
        dim = x.shape[-1]
        dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=self.kernel_init)
        norm = functools.partial(nn.LayerNorm, epsilon=1e-6, dtype=self.dtype)
        if drop_path_rate is None:
            drop = nn.Dropout(self.drop_path, broadcast_dims=(1, 2), deterministic=not train)
        else:
            drop = functools.partial(self._drop_path, rate=drop_path_rate,
                                     deterministic=not train)
        y = norm(name="norm1")(x)
        y = nn.MultiHeadDotProductAttention(
            self.num_heads, dtype=self.dtype, kernel_init=self.qkv_init or self.kernel_init,
            out_kernel_init=self.kernel_init, attention_fn=heads_first_attention, name="attn"
        )(y, deterministic=True, sow_weights=sow_attention)
        x = x + drop(y)
        y = norm(name="norm2")(x)
        y = dense(self.mlp_ratio * dim, name="fc1")(y)
        y = nn.gelu(y, approximate=False)
        y = dense(dim, name="fc2")(y)
        return x + drop(y)

    def _drop_path(self, y: jnp.ndarray, *, rate: jnp.ndarray, deterministic: bool
                   ) -> jnp.ndarray:
        """`nn.Dropout(rate, broadcast_dims=(1, 2))` for a traced `rate` < 1: each
        sample's branch kept with probability 1 - rate and scaled by its inverse."""
        if deterministic:
            return y
        keep = 1.0 - rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0], 1, 1))
        return jnp.where(mask, y / keep.astype(y.dtype), jnp.zeros_like(y))


def heads_first_attention(query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray,
                          mask: jnp.ndarray | None = None, dtype: Any = None,
                          precision: Any = None, module: nn.Module | None = None
                          ) -> jnp.ndarray:
    """`nn.dot_product_attention` without dropout or masks, its two batched matmuls
    taken with the heads ahead of the tokens ([..., heads, tokens, depth]): the
    same values, and on XLA:CPU the core of a ViT-S/16 block at 16 x 197 tokens
    runs its forward in 13 ms against 53 in the tokens-first layout (forward and
    backward 56 against 79). `module` sows the weights as flax's does (pictures)."""
    if mask is not None:
        raise ValueError("heads_first_attention takes no mask")
    query, key, value = promote_dtype(query, key, value, dtype=dtype)
    dtype = query.dtype
    q, k, v = (jnp.swapaxes(t, -3, -2) for t in (query, key, value))
    q = q / jnp.sqrt(q.shape[-1]).astype(dtype)
    weights = jnp.einsum("...hqd,...hkd->...hqk", q, k, precision=precision)
    weights = jax.nn.softmax(weights).astype(dtype)
    if module is not None:
        module.sow("intermediates", "attention_weights", weights)
    out = jnp.einsum("...hqk,...hkd->...hqd", weights, v, precision=precision)
    return jnp.swapaxes(out, -3, -2)


def batch_sharded(x: jnp.ndarray) -> jnp.ndarray:
    """`x` pinned to its leading (batch) axis split over every axis of the context
    mesh (`jax.set_mesh`), as `sslx.sharding.data_sharding` splits the batch; as is
    without one. Under FSDP this keeps the blocks batch-parallel: without it the
    partitioner may follow the split weights and gather the activations instead."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, jax.P(tuple(mesh.axis_names)))


def _call_block(block: Block, x: jnp.ndarray, *, train: bool, sow_attention: bool
                ) -> jnp.ndarray:
    """One block, as a function of the module (what `nn.remat` lifts; `train` and
    `sow_attention` bound beforehand stay Python values)."""
    return batch_sharded(block(batch_sharded(x), train=train, sow_attention=sow_attention))


def _scan_body(block: Block, x: jnp.ndarray, rate: jnp.ndarray, *, train: bool,
               traced_rate: bool) -> tuple[jnp.ndarray, None]:
    """One step of the scanned blocks: the carry is the tokens, the scanned input
    this block's stochastic-depth rate."""
    x = block(batch_sharded(x), train=train, drop_path_rate=rate if traced_rate else None)
    return batch_sharded(x), None


class ViT(nn.Module):
    """ViT for `image_size` inputs that also accepts other multiples of `patch_size`.

    Params: `patch_embed` (conv, so an optimizer rule can freeze it by name as
    MoCo v3 does), `cls_token`, `pos_embedding` (learned only; `sincos` is a
    constant), `block{i}` (with `scan`: `blocks`, stacked), `norm`, and
    `mask_token` when `use_mask_token` (iBOT; off by default so other methods
    carry no unused, decayed parameter).
    """

    image_size: int
    patch_size: int = 16
    hidden_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: int = 4
    pos_embedding: str = "learned"
    drop_path: float = 0.0
    use_mask_token: bool = False
    weight_init: str = "trunc_normal"  # a key of INITS
    dtype: Any = jnp.float32
    remat: bool = False  # each block under nn.remat
    scan: bool = False  # the blocks as one nn.scan over stacked params (`blocks`)

    @property
    def feature_dim(self) -> int:
        return self.hidden_dim

    @property
    def native_grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        *,
        train: bool,
        mask: jnp.ndarray | None = None,
        keep: jnp.ndarray | None = None,
        return_tokens: bool = False,
        sow_attention: bool = False,
    ) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """Class-token features [B, D] after the final norm, and with
        `return_tokens` also the patch tokens [B, N, D]. `mask` [B, N] (True =
        masked) replaces those patch embeddings by `mask_token`; `keep` [B, K]
        (patch indices, MAE) drops every other patch after the position
        embedding, so the blocks see K + 1 tokens and the tokens returned are the
        kept ones. `sow_attention` sows the last block's attention weights
        (`Block`) into `intermediates`."""
        batch, height, width, _ = x.shape
        p = self.patch_size
        if self.weight_init not in INITS:
            raise ValueError(f"weight_init must be one of {tuple(INITS)}, "
                             f"got {self.weight_init!r}")
        init = INITS[self.weight_init]
        if height % p or width % p:
            raise ValueError(f"input {height}x{width} is not a multiple of patch size {p}")
        x = nn.Conv(self.hidden_dim, (p, p), (p, p), padding="VALID", dtype=self.dtype,
                    kernel_init=init.patch, bias_init=init.patch_bias(p * p * x.shape[-1]),
                    name="patch_embed")(x.astype(self.dtype))
        grid = x.shape[1:3]
        x = einops.rearrange(x, "b h w d -> b (h w) d")

        if self.use_mask_token:
            token = self.param("mask_token", nn.initializers.zeros, (1, 1, self.hidden_dim))
        if mask is not None:
            if not self.use_mask_token:
                raise ValueError("a mask needs the ViT built with use_mask_token=True")
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask shape {mask.shape} is not (batch, patches) "
                                 f"= {x.shape[:2]}")
            x = jnp.where(mask[..., None], token.astype(self.dtype), x)

        cls_pos, patch_pos = self._position_embedding()
        patch_pos = resize_pos_embedding(patch_pos, self.native_grid, grid)
        x = x + patch_pos.astype(self.dtype)
        if keep is not None:
            x = jnp.take_along_axis(x, keep[..., None], axis=1)
        cls = self.param("cls_token", init.cls_token, (1, 1, self.hidden_dim)).astype(self.dtype)
        cls = cls + cls_pos.astype(self.dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.hidden_dim)), x], axis=1)

        x = self._blocks(x, init, train=train, sow_attention=sow_attention)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
        return (x[:, 0], x[:, 1:]) if return_tokens else x[:, 0]

    def _blocks(self, x: jnp.ndarray, init: Inits, *, train: bool, sow_attention: bool
                ) -> jnp.ndarray:
        """The `depth` blocks, stochastic depth rising linearly to `drop_path`: one
        module each (`block{i}`), or with `scan` one stacked `blocks` module;
        each under `nn.remat` with `remat`."""
        rates = np.linspace(0.0, self.drop_path, self.depth)
        block = functools.partial(Block, self.num_heads, self.mlp_ratio, dtype=self.dtype,
                                  kernel_init=init.dense, qkv_init=init.qkv)
        if not self.scan:
            for i, rate in enumerate(rates):
                sow = sow_attention and i == self.depth - 1
                run = functools.partial(_call_block, train=train, sow_attention=sow)
                x = (nn.remat(run) if self.remat else run)(
                    block(drop_path=float(rate), name=f"block{i}"), x)
            return x
        if sow_attention:
            raise ConfigError("config.model.scan=True: a scanned ViT does not keep its last "
                              "block's attention apart; set config.model.scan=False to draw it")
        # Rate 0 everywhere: no rate is passed, so training needs no dropout rng.
        traced = bool(self.drop_path)
        body = functools.partial(_scan_body, train=train, traced_rate=traced)
        if self.remat:
            body = nn.remat(body, prevent_cse=False)  # scan already keeps CSE apart
        scanned = nn.scan(body, variable_axes={"params": 0},
                          split_rngs={"params": True, "dropout": True}, in_axes=0,
                          length=self.depth)
        x, _ = scanned(block(name="blocks"), x, jnp.asarray(rates, jnp.float32))
        return x

    def _position_embedding(self) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(class-token position [1, D], patch positions [N, D]) at the native grid."""
        if self.pos_embedding == "learned":
            num = self.native_grid[0] * self.native_grid[1]
            pos = self.param("pos_embedding", inits.torch_trunc_normal,
                             (1 + num, self.hidden_dim))
            return pos[:1], pos[1:]
        if self.pos_embedding == "sincos":
            # MoCo v3: fixed, with a zero position for the class token.
            return (jnp.zeros((1, self.hidden_dim), jnp.float32),
                    jnp.asarray(sincos_2d(*self.native_grid, self.hidden_dim)))
        raise ValueError(f"pos_embedding must be one of {POS_EMBEDDINGS}, "
                         f"got {self.pos_embedding!r}")
