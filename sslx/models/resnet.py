"""ResNet-18/34/50 backbones returning pooled features (no classifier).

The CIFAR stem (3x3/1 conv, no max-pool) is what small-image recipes use; the
ImageNet stem on 32 px inputs leaves a 1x1 map before the last stage and is a
classic cause of numbers far below the papers'. BatchNorm normalises over the
batch it is given: under one jit over the global batch, that is the global
batch on every device and host, so no `axis_name` is needed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslx.models import cpu_conv

STEMS = ("imagenet", "cifar")

# He-normal with fan_out, as torchvision initialises ResNet convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ResidualBlock(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1; v1.5: stride on the 3x3)
    block. With `zero_init_residual` the last BN scale starts at zero, so every
    block starts as the identity, which stabilises large-batch training (Goyal et
    al. 2017; torchvision's `zero_init_residual=True`, as most SSL recipes use)."""

    channels: int
    strides: int
    bottleneck: bool
    zero_init_residual: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        conv = functools.partial(
            nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init,
            conv_general_dilated=cpu_conv.for_backend(),
        )
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
            dtype=self.dtype,
        )
        if self.bottleneck:
            out_channels = 4 * self.channels
            layers = [(1, 1), (3, self.strides), (1, 1)]
            widths = [self.channels, self.channels, out_channels]
        else:
            out_channels = self.channels
            layers = [(3, self.strides), (3, 1)]
            widths = [self.channels, self.channels]
        y = x
        for i, ((kernel, stride), width) in enumerate(zip(layers, widths, strict=True)):
            last = i == len(layers) - 1
            y = conv(width, (kernel, kernel), (stride, stride), padding=kernel // 2,
                     name=f"conv{i + 1}")(y)
            zero = last and self.zero_init_residual
            y = norm(scale_init=nn.initializers.zeros if zero else nn.initializers.ones,
                     name=f"bn{i + 1}")(y)
            if not last:
                y = nn.relu(y)
        if x.shape[-1] != out_channels or self.strides != 1:
            x = conv(out_channels, (1, 1), (self.strides, self.strides), name="proj_conv")(x)
            x = norm(name="proj_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """`stage_sizes` blocks per stage at widths width*(1, 2, 4, 8) (times 4 for
    bottleneck blocks); output: global-average-pooled features [B, feature_dim],
    and with `return_map` also the last stage's map [B, h, w, feature_dim] they pool
    (dense pretext tasks predict from it)."""

    stage_sizes: Sequence[int]
    bottleneck: bool = False
    width: int = 64
    stem: str = "imagenet"
    zero_init_residual: bool = True
    dtype: Any = jnp.float32

    @property
    def feature_dim(self) -> int:
        return 8 * self.width * (4 if self.bottleneck else 1)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool,
                 return_map: bool = False) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        x = x.astype(self.dtype)
        imagenet = self.stem == "imagenet"
        kernel, stride = (7, 2) if imagenet else (3, 1)
        x = nn.Conv(self.width, (kernel, kernel), (stride, stride), padding=kernel // 2,
                    use_bias=False, dtype=self.dtype, kernel_init=conv_init,
                    conv_general_dilated=cpu_conv.for_backend(), name="stem_conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="stem_bn")(x)
        x = nn.relu(x)
        if imagenet:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                x = ResidualBlock(
                    channels=self.width * 2**stage,
                    strides=2 if stage > 0 and block == 0 else 1,
                    bottleneck=self.bottleneck,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    name=f"stage{stage + 1}_block{block + 1}",
                )(x, train=train)
        pooled = jnp.mean(x, axis=(1, 2))
        return (pooled, x) if return_map else pooled
