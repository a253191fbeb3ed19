"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views'
projections, standardised over the global batch, is pushed to the identity.
Each view is its own forward pass, so its own BatchNorm batch, as in the
official code (`common.TwoViewMethod`).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, PyTree
from sslx.methods.common import TwoViewMethod, wide_projector

# configs/barlow_twins_resnet50.py (Zbontar et al. 2021, Sec. 2-3).
DEFAULTS = dict(lambd=0.0051, loss_scale=1.0, projector_hidden_dim=8192, projector_dim=8192)


@register("barlow_twins", defaults=DEFAULTS)
class BarlowTwins(TwoViewMethod):
    """Config: `method.lambd` (off-diagonal weight λ), `method.loss_scale` (a constant
    factor on the loss, 1 in the paper), `method.projector_hidden_dim`,
    `method.projector_dim`.

    Logged: `invariance` Σ(1 − C_ii)² and `redundancy` λ Σ_{i≠j} C_ij² (their sum
    times loss_scale is the loss), `embedding_std`."""

    batch_level_loss = "standardises its projections and their cross-correlation over the batch"

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        if not cfg.lambd >= 0:
            raise ConfigError(f"config.method.lambd={cfg.lambd} must be >= 0")
        if not cfg.loss_scale > 0:
            raise ConfigError(f"config.method.loss_scale={cfg.loss_scale} must be > 0")

    def heads(self) -> dict[str, nn.Module]:
        return {"projector": wide_projector(self.config, self.dtype)}

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        outputs, batch_stats = self.forward_views(params, state, batch["views"], rng)
        z_a, z_b = (out["projection"] for out in outputs)
        loss = losses.barlow_twins(z_a, z_b, self.config.lambd)
        # Same cross-correlation matrix with λ = 0: XLA computes it once (CSE).
        invariance = losses.barlow_twins(z_a, z_b, 0.0)
        metrics = {"invariance": invariance, "redundancy": loss - invariance,
                   "embedding_std": losses.embedding_std(z_a)}
        return self.config.loss_scale * loss, ({"batch_stats": batch_stats}, metrics)
