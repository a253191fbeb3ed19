"""MoCo v3 (Chen, Xie & He 2021): BYOL's architecture (query encoder with a
predictor, momentum key encoder without) trained with a contrastive loss whose
negatives are the other keys of the global batch (Alg. 1):

    loss = ctr(q1, k2) + ctr(q2, k1),  ctr = `losses.moco_v3` (InfoNCE scaled by 2 tau)

Heads as in the official code: every Dense is bias-free and followed by BN; the
projector ends in an affine-free BN; the predictor's output BN is on for ViT and
off for ResNet (`method.predictor_output_norm`). The key encoder is updated
after the optimizer step (the reference updates it just before computing the
keys of the next step: the same sequence of updates, shifted by the schedule's
first value).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import byol, register
from sslx.methods.byol import BYOL
from sslx.models import heads

# BYOL's fields and MoCo v3's own; values of configs/mocov3_resnet50.py (Chen, Xie &
# He 2021, the official main_moco.py ResNet-50 defaults; the ViT recipes take
# temperature 0.2, 3 projector layers and the predictor's output BN).
DEFAULTS = {**byol.DEFAULTS, "temperature": 1.0, "projector_layers": 2,
            "predictor_output_norm": False, "base_momentum": 0.99}


@register("mocov3", defaults=DEFAULTS)
class MoCoV3(BYOL):
    """Config: `method.temperature` (1.0 ResNet, 0.2 ViT), `method.projector_layers`
    (2 ResNet, 3 ViT), `method.projector_hidden_dim`, `method.projector_dim`,
    `method.predictor_hidden_dim`, `method.predictor_output_norm`,
    `method.base_momentum` (0.99, cosine to 1)."""

    batch_level_loss = "contrasts each query with the other keys of the batch (its negatives)"

    def check_config(self) -> None:
        super().check_config()
        if not self.config.temperature > 0:
            raise ConfigError(f"config.method.temperature={self.config.temperature} "
                              "must be > 0")

    def heads(self) -> dict[str, nn.Module]:
        cfg = self.config
        return {"projector": heads.MLPHead(cfg.projector_hidden_dim, cfg.projector_dim,
                                           num_layers=cfg.projector_layers, output_norm=True,
                                           use_bias=False, dtype=self.dtype),
                "predictor": heads.MLPHead(cfg.predictor_hidden_dim, cfg.projector_dim,
                                           output_norm=cfg.predictor_output_norm,
                                           use_bias=False, dtype=self.dtype)}

    def pair_loss(self, p: jax.Array, z: jax.Array) -> jax.Array:
        return losses.moco_v3(p, z, self.config.temperature)
