"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views'
projections, standardised over the global batch, is pushed to the identity.

Also home of `TwoViewMethod`, the shape Barlow Twins shares with VICReg and
NNCLR: backbone -> projector [-> predictor] on exactly two views, each view its
own forward pass (so each view is its own BatchNorm batch, as in the official
Barlow Twins and VICReg code and solo-learn's NNCLR), backbone features for
evaluation.
"""

from __future__ import annotations

import abc

import flax.linen as nn
import jax

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree
from sslx.methods.common import Encoder, forward, init_variables
from sslx.models import build_backbone, heads


class TwoViewMethod(Method):
    """A method on two views of each image whose network is `Encoder` with the
    heads of `heads()`; its state starts as `{'batch_stats'}`."""

    @abc.abstractmethod
    def heads(self) -> dict[str, nn.Module]:
        """`{'projector': ..., 'predictor': ...}` (predictor optional) for `Encoder`."""

    def check_config(self) -> None:
        crops = sum(group.count for group in self.config.views.values())
        if crops != 2:
            raise ConfigError(f"{type(self).__name__} needs exactly 2 views; config.views has "
                              f"{crops} crops: use one view group with count=2")

    @property
    def network(self) -> Encoder:
        size = max(group.size for group in self.config.views.values())
        return Encoder(backbone=build_backbone(self.config.model, image_size=size,
                                               dtype=self.dtype), **self.heads())

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        params, batch_stats = init_variables(self.network, rng, batch["views"][0])
        return params, {"batch_stats": batch_stats}

    def forward_views(self, params: PyTree, state: PyTree,
                      batch: Batch) -> tuple[list[dict[str, jax.Array]], PyTree]:
        """Training-mode outputs of each view, one forward pass per view, and the
        BatchNorm statistics updated by both."""
        outputs, batch_stats = [], state["batch_stats"]
        for view in batch["views"]:
            (out,), batch_stats = forward(self.network, params, batch_stats, [view], train=True)
            outputs.append(out)
        return outputs, batch_stats

    def embed(self, params: PyTree, state: PyTree, images: jax.Array) -> jax.Array:
        variables = {"params": params, "batch_stats": state["batch_stats"]}
        return self.network.apply(variables, images, train=False, features_only=True)["features"]


def wide_projector(config, dtype) -> heads.MLPHead:
    """Barlow Twins' and VICReg's projector: (Linear-BN-ReLU) x 2, then Linear,
    all without bias (BN's shift subsumes the hidden biases; the official final
    layer has none)."""
    return heads.MLPHead(hidden_dim=config.projector_hidden_dim, out_dim=config.projector_dim,
                         num_layers=3, use_bias=False, dtype=dtype)


# configs/barlow_twins_resnet50.py (Zbontar et al. 2021, Sec. 2-3).
DEFAULTS = dict(lambd=0.0051, loss_scale=1.0, projector_hidden_dim=8192, projector_dim=8192)


@register("barlow_twins", defaults=DEFAULTS)
class BarlowTwins(TwoViewMethod):
    """Config: `method.lambd` (off-diagonal weight λ), `method.loss_scale` (a constant
    factor on the loss, 1 in the paper), `method.projector_hidden_dim`,
    `method.projector_dim`.

    Logged: `invariance` Σ(1 − C_ii)² and `redundancy` λ Σ_{i≠j} C_ij² (their sum
    times loss_scale is the loss), `embedding_std`."""

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config.method
        if not cfg.lambd >= 0:
            raise ConfigError(f"config.method.lambd={cfg.lambd} must be >= 0")
        if not cfg.loss_scale > 0:
            raise ConfigError(f"config.method.loss_scale={cfg.loss_scale} must be > 0")

    def heads(self) -> dict[str, nn.Module]:
        return {"projector": wide_projector(self.config.method, self.dtype)}

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        outputs, batch_stats = self.forward_views(params, state, batch)
        z_a, z_b = (out["projection"] for out in outputs)
        loss = losses.barlow_twins(z_a, z_b, self.config.method.lambd)
        # Same cross-correlation matrix with λ = 0: XLA computes it once (CSE).
        invariance = losses.barlow_twins(z_a, z_b, 0.0)
        metrics = {"invariance": invariance, "redundancy": loss - invariance,
                   "embedding_std": losses.embedding_std(z_a)}
        return self.config.method.loss_scale * loss, ({"batch_stats": batch_stats}, metrics)
