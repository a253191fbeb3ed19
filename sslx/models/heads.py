"""Projectors, predictors, the DINO head and SwAV prototypes.

One `MLPHead` covers the projector/predictor of every method; they differ only
in depth, widths, where BatchNorm sits and whether the output is normalised:

    SimCLR v1/v2   MLPHead(0, 128, num_layers=2 or 3, output_norm=True, output_norm_scale=True,
                           linear_init="normal_0.01")
    BYOL           MLPHead(4096, 256, use_bias=False, linear_init="haiku")
                                                           projector and predictor
    SimSiam        MLPHead(2048, 2048, num_layers=3, output_norm=True)   projector
                   MLPHead(512, 2048)                      predictor (bottleneck 512)
    Barlow/VICReg  MLPHead(8192, 8192, num_layers=3, use_bias=False)
                   (Barlow's affine-free BN of each view's output belongs to its loss)
    MoCo v3        MLPHead(4096, 256, num_layers=3 (ViT) or 2 (ResNet), output_norm=True)
                   projector; MLPHead(4096, 256, use_bias=False) predictor
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx.models import inits

PyTree = Any


NORM_EPS = 1e-12  # torch's F.normalize


def l2_normalize(x: jnp.ndarray, axis: int = -1, eps: float = NORM_EPS) -> jnp.ndarray:
    """x / max(||x||, eps), computed in float32 (as torch's F.normalize)."""
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x32 * x32, axis=axis, keepdims=True))
    return (x32 / jnp.maximum(norm, eps)).astype(x.dtype)


class MLPHead(nn.Module):
    """`num_layers` Dense layers (hidden_dim, ..., out_dim) with [BN] + activation
    after each hidden layer and an optional BN on the output.

    A Dense followed by BN has no bias (BN's shift subsumes it); `use_bias`
    decides the bias of the layers that are not. The output BN has no affine
    parameters unless `output_norm_scale`/`output_norm_bias` (SimCLR keeps a
    scale; MoCo v3 and SimSiam use none). `hidden_dim=0` makes the hidden layers
    as wide as the input (SimCLR's head). `linear_init` starts the Dense layers as
    the official code's framework does (`inits.LINEAR_INITS`): the scale of a layer
    that no BatchNorm follows sets the size of its outputs and of its steps.
    Params: `dense{i}`, `bn{i}`.
    """

    hidden_dim: int
    out_dim: int
    num_layers: int = 2
    hidden_norm: bool = True
    output_norm: bool = False
    output_norm_scale: bool = False
    output_norm_bias: bool = False
    use_bias: bool = True
    activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
    linear_init: str = "torch"  # a key of inits.LINEAR_INITS: the official code's framework
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.linear_init not in inits.LINEAR_INITS:
            raise ValueError(f"linear_init must be one of {tuple(inits.LINEAR_INITS)}, "
                             f"got {self.linear_init!r}")
        init = inits.LINEAR_INITS[self.linear_init]
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
            dtype=self.dtype,
        )
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            normed = self.output_norm if last else self.hidden_norm
            x = nn.Dense(
                self.out_dim if last else self.hidden_dim or x.shape[-1],
                use_bias=self.use_bias and not normed,
                dtype=self.dtype,
                kernel_init=init.kernel,
                bias_init=init.bias(x.shape[-1]),
                name=f"dense{i}",
            )(x)
            if normed:
                affine = (dict(use_scale=self.output_norm_scale, use_bias=self.output_norm_bias)
                          if last else {})
                x = norm(name=f"bn{i}", **affine)(x)
            if not last:
                x = self.activation(x)
        return x


class WeightNormDense(nn.Module):
    """Bias-free Dense whose kernel is `g * v / ||v||` per output column.

    With `learn_scale=False` g is fixed at 1 (DINO's `norm_last_layer=True`),
    so the outputs are cosine similarities between the input and each column.
    `v` starts as PyTorch's default Linear weight, as DINO's last layer (built
    after its `_init_weights` pass) does: the size of `v` sets how far a gradient
    step turns each column, since the gradient reaching `v` scales as 1 / ||v||.

    Computed as `(x @ v) * (g / ||v||)`, the column scale applied to the [B, K]
    product rather than to the [D, K] kernel: the same values, and XLA:CPU would
    otherwise fuse the column norms into the matmul's operand and recompute them
    per tile (DINO ViT-S's teacher head, K = 65536: 5.3 s of a 13 s step)."""

    features: int
    learn_scale: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        v = self.param("v", inits.torch_default_kernel, (x.shape[-1], self.features))
        norm = jnp.sqrt(jnp.sum(jnp.square(v.astype(jnp.float32)), axis=0))
        scale = 1.0 / jnp.maximum(norm, NORM_EPS)
        if self.learn_scale:
            scale = scale * self.param("g", nn.initializers.ones, (self.features,))
        return jnp.dot(x.astype(self.dtype), v.astype(self.dtype)) * scale.astype(self.dtype)


class DINOHead(nn.Module):
    """DINO projection head: MLP (GELU, no BN by default) to a bottleneck, l2
    normalisation, then a weight-normalised layer to `out_dim` logits.

    Params: `mlp` and `last_layer` (`v`, plus `g` unless `norm_last_layer`) —
    the name an optimizer rule uses to freeze it during the first epoch."""

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = MLPHead(
            self.hidden_dim, self.bottleneck_dim, num_layers=self.num_layers,
            hidden_norm=self.use_bn, activation=functools.partial(nn.gelu, approximate=False),
            linear_init="trunc_normal", dtype=self.dtype, name="mlp",
        )(x, train=train)
        return WeightNormDense(
            self.out_dim, learn_scale=not self.norm_last_layer, dtype=self.dtype,
            name="last_layer",
        )(l2_normalize(x))


def _unit_rows(init: Callable[..., jnp.ndarray]) -> Callable[..., jnp.ndarray]:
    return lambda key, shape, dtype=jnp.float32: l2_normalize(init(key, shape, dtype))


class Prototypes(nn.Module):
    """SwAV prototypes: scores [B, K] of l2-normalised features against K
    prototype vectors, stored as the rows of the bias-free param `prototypes`
    [K, D] and born unit-norm; call `normalize_prototypes` after each update."""

    num_prototypes: int = 3000
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        weights = self.param(
            "prototypes", _unit_rows(nn.initializers.normal(1.0)),
            (self.num_prototypes, x.shape[-1]),
        )
        return jnp.dot(l2_normalize(x).astype(self.dtype), weights.T.astype(self.dtype))


def normalize_prototypes(params: PyTree) -> PyTree:
    """`params` with every leaf named `prototypes` (anywhere in the tree)
    l2-normalised row by row; other leaves unchanged."""
    found = False

    def visit(path: tuple[Any, ...], leaf: jnp.ndarray) -> jnp.ndarray:
        nonlocal found
        if path and getattr(path[-1], "key", None) == "prototypes":
            found = True
            return l2_normalize(leaf)
        return leaf

    out = jax.tree_util.tree_map_with_path(visit, params)
    if not found:
        raise ValueError("normalize_prototypes: no parameter named 'prototypes' in the tree")
    return out
