"""BYOL (Grill et al. 2020): the online network's prediction of one view regresses
the projection of the other view by a target network, an EMA of the online
backbone and projector (Sec. 3.1, eq. 2 symmetrised):

    loss = byol_loss(q(v1), z'(v2)) + byol_loss(q(v2), z'(v1))

The target lives in the method state and gets no gradient; after every
optimizer step it moves toward the online weights with momentum
tau_k = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2 (`teacher.EMATarget`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from sslx import losses
from sslx.methods import register
from sslx.methods.base import Metrics, PyTree
from sslx.methods.common import EMATeacherMethod, PredictionMethod, forward_each_view
from sslx.models import heads

# configs/byol_resnet50.py (Grill et al. 2020, Sec. 3.3). Not SimSiam's fields:
# BYOL's projector has a fixed depth (no `projector_layers`).
DEFAULTS = dict(projector_hidden_dim=4096, projector_dim=256, predictor_hidden_dim=4096,
                base_momentum=0.996)


@register("byol", defaults=DEFAULTS)
class BYOL(EMATeacherMethod, PredictionMethod):
    """Config: `method.projector_hidden_dim`, `method.projector_dim`,
    `method.predictor_hidden_dim`, `method.base_momentum` (tau_base)."""

    batch_level_loss = "normalises over the batch with the BatchNorm of its projector and predictor"

    def heads(self) -> dict[str, nn.Module]:
        """Projector and predictor: Dense-BN-ReLU-Dense (Sec. 3.3), no BN on the output
        and no bias on the last Dense, Haiku's Linear init (`networks.MLP` of the
        official code)."""
        cfg = self.config
        return {"projector": heads.MLPHead(cfg.projector_hidden_dim, cfg.projector_dim,
                                           use_bias=False, linear_init="haiku",
                                           dtype=self.dtype),
                "predictor": heads.MLPHead(cfg.predictor_hidden_dim, cfg.projector_dim,
                                           use_bias=False, linear_init="haiku",
                                           dtype=self.dtype)}

    def pair_loss(self, p: jax.Array, z: jax.Array) -> jax.Array:
        return losses.byol_loss(p, z)

    def targets(self, state: PyTree, views: Sequence[jax.Array], online: list[dict],
                rng: jax.Array) -> tuple[list[jax.Array], PyTree]:
        del online
        target = state["target"]
        outputs, target_stats = forward_each_view(
            self.teacher_network(), target["params"], target["batch_stats"], views, rng)
        z = [jax.lax.stop_gradient(out["projection"]) for out in outputs]
        return z, {**state, "target": {**target, "batch_stats": target_stats}}

    def step_metrics(self, step: jax.Array) -> Metrics:
        return {"momentum": self.teacher.momentum(step)}
