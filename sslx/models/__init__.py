"""Backbones by name (`config.model.name`) and the heads methods put on them.

Every backbone maps images [B, H, W, 3] to features [B, feature_dim] with
`module.apply(variables, x, train=...)`; config mistakes are reported here, as
`ConfigError`s naming the field, before anything is traced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from sslx.errors import ConfigError, close_matches
from sslx.models.heads import DINOHead, MLPHead, Prototypes, l2_normalize, normalize_prototypes
from sslx.models.resnet import STEMS, ResNet
from sslx.models.vit import INITS, POS_EMBEDDINGS, VARIANTS, Variant, ViT


class _Backbone(NamedTuple):
    # (model config, image size, dtype, mask token) -> module
    make: Callable[[ml_collections.ConfigDict, int, Any, bool], nn.Module]
    feature_dim: Callable[[ml_collections.ConfigDict], int]


def _check_choice(config: ml_collections.ConfigDict, field: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, field)
    if value not in choices:
        raise ConfigError(
            f"config.model.{field}={value!r} is not one of {', '.join(choices)}"
            f"{close_matches(str(value), choices)}"
        )


def _check_drop_path(config: ml_collections.ConfigDict) -> None:
    if not 0.0 <= config.drop_path < 1.0:
        raise ConfigError(f"config.model.drop_path={config.drop_path} must be in [0, 1)")


def _resnet(stage_sizes: tuple[int, ...], bottleneck: bool) -> _Backbone:
    def make(config: ml_collections.ConfigDict, image_size: int, dtype: Any,
             mask_token: bool) -> nn.Module:
        del image_size  # convolutions take any resolution
        _check_choice(config, "stem", STEMS)
        if config.width < 1:
            raise ConfigError(f"config.model.width={config.width} must be positive")
        if config.drop_path:
            raise ConfigError(
                f"config.model.drop_path={config.drop_path}: stochastic depth is implemented "
                f"for ViT backbones only; set it to 0 for {config.name}"
            )
        for field in ("remat", "scan"):
            if config.get(field, False):
                raise ConfigError(f"config.model.{field}=True is implemented for ViT backbones "
                                  f"only; set it to False for {config.name}")
        if mask_token:
            raise ConfigError(
                f"config.model.name={config.name!r}: masked-image methods need a ViT backbone"
            )
        return ResNet(stage_sizes, bottleneck, width=config.width, stem=config.stem,
                      zero_init_residual=config.zero_init_residual, dtype=dtype)

    return _Backbone(
        make, lambda config: ResNet(stage_sizes, bottleneck, width=config.width).feature_dim
    )


def _vit(variant: Variant) -> _Backbone:
    def make(config: ml_collections.ConfigDict, image_size: int, dtype: Any,
             mask_token: bool) -> nn.Module:
        _check_choice(config, "pos_embedding", POS_EMBEDDINGS)
        _check_choice(config, "vit_init", tuple(INITS))
        _check_drop_path(config)
        num_heads = config.num_heads or variant.num_heads
        if num_heads < 1 or variant.hidden_dim % num_heads:
            raise ConfigError(
                f"config.model.num_heads={config.num_heads} must divide the width "
                f"{variant.hidden_dim} of {config.name} (0 keeps its {variant.num_heads})")
        patch = config.patch_size
        if patch < 1 or image_size % patch:
            divisors = [d for d in range(2, image_size + 1) if image_size % d == 0]
            raise ConfigError(
                f"config.model.patch_size={patch} does not divide the image size "
                f"{image_size}; patch sizes that do: {', '.join(map(str, divisors))}"
            )
        return ViT(
            image_size=image_size, patch_size=patch, hidden_dim=variant.hidden_dim,
            depth=config.depth or variant.depth, num_heads=num_heads,
            pos_embedding=config.pos_embedding, drop_path=config.drop_path,
            use_mask_token=mask_token, weight_init=config.vit_init, dtype=dtype,
            # A config saved before these fields existed reads as False.
            remat=config.get("remat", False), scan=config.get("scan", False),
        )

    return _Backbone(make, lambda config: variant.hidden_dim)


_BACKBONES: dict[str, _Backbone] = {
    "resnet18": _resnet((2, 2, 2, 2), bottleneck=False),
    "resnet34": _resnet((3, 4, 6, 3), bottleneck=False),
    "resnet50": _resnet((3, 4, 6, 3), bottleneck=True),
    "vit_t": _vit(VARIANTS["T"]),
    "vit_s": _vit(VARIANTS["S"]),
    "vit_b": _vit(VARIANTS["B"]),
    "vit_l": _vit(VARIANTS["L"]),
}


def _lookup(model_config: ml_collections.ConfigDict) -> _Backbone:
    name = model_config.name
    if name not in _BACKBONES:
        raise ConfigError(
            f"config.model.name={name!r} is not a backbone{close_matches(str(name), _BACKBONES)}; "
            f"available: {', '.join(_BACKBONES)}"
        )
    return _BACKBONES[name]


def build_backbone(
    model_config: ml_collections.ConfigDict,
    *,
    image_size: int,
    dtype: Any = jnp.float32,
    mask_token: bool = False,
) -> nn.Module:
    """The backbone `model_config.name` for inputs of side `image_size` (a ViT's
    native resolution; other multiples of its patch size are accepted too).
    `dtype` is the compute dtype (params stay float32); `mask_token` gives a
    ViT the learned token that `mask=` inputs use (iBOT)."""
    return _lookup(model_config).make(model_config, image_size, dtype, mask_token)


def feature_dim(model_config: ml_collections.ConfigDict) -> int:
    """Width of the backbone's features, to size the heads put on it."""
    return _lookup(model_config).feature_dim(model_config)


def names() -> list[str]:
    """All backbone names `config.model.name` accepts."""
    return list(_BACKBONES)


__all__ = [
    "DINOHead",
    "MLPHead",
    "Prototypes",
    "ResNet",
    "ViT",
    "build_backbone",
    "feature_dim",
    "l2_normalize",
    "names",
    "normalize_prototypes",
]
