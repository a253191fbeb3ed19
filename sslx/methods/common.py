"""Pieces that many methods share: a backbone with heads, and a forward pass over
views that threads BatchNorm statistics through one call per resolution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from sslx.methods.base import PyTree, apply_by_resolution


class Encoder(nn.Module):
    """backbone -> projector -> predictor; each head is optional.

    Returns `{'features': h, 'projection': z, 'prediction': p}` with the entries
    of the heads that exist; `features_only=True` stops after the backbone."""

    backbone: nn.Module
    projector: nn.Module | None = None
    predictor: nn.Module | None = None

    def __call__(self, x: jax.Array, *, train: bool,
                 features_only: bool = False) -> dict[str, jax.Array]:
        outputs = {"features": self.backbone(x, train=train)}
        if features_only or self.projector is None:
            return outputs
        outputs["projection"] = self.projector(outputs["features"], train=train)
        if self.predictor is not None:
            outputs["prediction"] = self.predictor(outputs["projection"], train=train)
        return outputs


def init_variables(module: nn.Module, rng: jax.Array, images: jax.Array,
                   **kwargs: Any) -> tuple[PyTree, PyTree]:
    """`(params, batch_stats)` of a module that takes `(images, train=...)`."""
    params_rng, dropout_rng = jax.random.split(rng)
    variables = module.init({"params": params_rng, "dropout": dropout_rng}, images,
                            train=False, **kwargs)
    return variables["params"], variables.get("batch_stats", {})


def forward(module: nn.Module, params: PyTree, batch_stats: PyTree,
            views: Sequence[jax.Array], *, train: bool, rng: jax.Array | None = None,
            **kwargs: Any) -> tuple[list[Any], PyTree]:
    """Applies `module` to every view, one call per run of same-resolution views.

    In training, BatchNorm statistics are updated call after call and returned;
    the statistics of one call are over all the crops of that resolution in the
    global batch. Returns `(outputs per view, new batch_stats)`."""
    stats = batch_stats
    calls = 0

    def apply(images: jax.Array) -> Any:
        nonlocal stats, calls
        variables = {"params": params, "batch_stats": stats}
        if not train:
            return module.apply(variables, images, train=False, **kwargs)
        rngs = {"dropout": jax.random.fold_in(rng, calls)} if rng is not None else {}
        calls += 1
        outputs, updates = module.apply(variables, images, train=True, rngs=rngs,
                                        mutable=["batch_stats"], **kwargs)
        stats = updates.get("batch_stats", stats)
        return outputs

    outputs = apply_by_resolution(apply, views)
    return outputs, stats
