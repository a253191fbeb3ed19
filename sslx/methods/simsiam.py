"""SimSiam (Chen & He 2021): a predictor on one view regresses the stop-gradient
projection of the other view through the same encoder.

    loss = 0.5 * D(p1, stopgrad(z2)) + 0.5 * D(p2, stopgrad(z1)),  D = negative cosine

BYOL and MoCo v3 share its shape (`common.PredictionMethod`) with an EMA target
network for `z` and another `pair_loss`. As in the three reference
implementations, each view goes through the network in its own call, so
BatchNorm statistics are per view (over the global batch).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from sslx import losses
from sslx.methods import register
from sslx.methods.common import PredictionMethod
from sslx.models import heads

# configs/simsiam_resnet50.py (Chen & He 2021, Sec. 3 and Appendix A).
DEFAULTS = dict(projector_layers=3, projector_hidden_dim=2048, projector_dim=2048,
                predictor_hidden_dim=512)


@register("simsiam", defaults=DEFAULTS)
class SimSiam(PredictionMethod):
    """Config: `method.projector_layers` (3 ImageNet, 2 CIFAR), `method.projector_hidden_dim`,
    `method.projector_dim`, `method.predictor_hidden_dim` (the 512 bottleneck)."""

    batch_level_loss = "normalises over the batch with the BatchNorm of its projector and predictor"

    def heads(self) -> dict[str, nn.Module]:
        cfg = self.config
        return {
            # 3 Dense layers, BN on every output, the last BN without affine params.
            "projector": heads.MLPHead(cfg.projector_hidden_dim, cfg.projector_dim,
                                       num_layers=cfg.projector_layers, output_norm=True,
                                       dtype=self.dtype),
            # Dense-BN-ReLU bottleneck, then a plain Dense back to the projection width.
            "predictor": heads.MLPHead(cfg.predictor_hidden_dim, cfg.projector_dim,
                                       dtype=self.dtype),
        }

    def pair_loss(self, p: jax.Array, z: jax.Array) -> jax.Array:
        return 0.5 * losses.negative_cosine(p, z)
