"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views.

The negatives of each anchor are all other views in the global batch — every
device and host — because the step sees the global batch. Both views go
through the network in one call, so BatchNorm statistics span both views, as
in the reference implementation.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, PyTree
from sslx.methods.common import TwoViewMethod
from sslx.models import heads

# configs/simclr_resnet50.py (Chen et al. 2020, Sec. 4 and Appendix B.9).
# projector_hidden_dim 0: as wide as the backbone's features, as the official head
# (2048 for a ResNet-50, 512 for a ResNet-18).
DEFAULTS = dict(temperature=0.1, loss_scale=2.0, projector_layers=2,
                projector_hidden_dim=0, projector_dim=128)


@register("simclr", defaults=DEFAULTS)
class SimCLR(TwoViewMethod):
    """Config: `method.temperature`, `method.loss_scale`, `method.projector_layers`
    (2 = SimCLR v1, 3 = SimCLR v2), `method.projector_hidden_dim` (0 = the
    backbone's width), `method.projector_dim`.

    The loss is `loss_scale` x `losses.nt_xent` (the mean over the 2N anchors).
    The official code (tf2 `add_contrastive_loss`) returns mean(loss_a + loss_b)
    over the N images, twice that: the default 2.0 matches it, which matters for
    the steps of the parameters LARS does not adapt (biases, BatchNorm)."""

    batch_level_loss = "contrasts each view with the other views of the batch (its negatives)"
    views_share_batch_norm = True

    def check_config(self) -> None:
        super().check_config()
        if not self.config.temperature > 0:
            raise ConfigError(f"config.method.temperature={self.config.temperature} "
                              "must be > 0")
        if not self.config.loss_scale > 0:
            raise ConfigError(f"config.method.loss_scale={self.config.loss_scale} must be > 0")

    def heads(self) -> dict[str, nn.Module]:
        cfg = self.config
        return {"projector": heads.MLPHead(
            hidden_dim=cfg.projector_hidden_dim, out_dim=cfg.projector_dim,
            num_layers=cfg.projector_layers, output_norm=True, output_norm_scale=True,
            linear_init="normal_0.01", dtype=self.dtype)}  # tf2 `LinearLayer`

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        outputs, batch_stats = self.forward_views(params, state, batch["views"], rng)
        z_a, z_b = (out["projection"] for out in outputs)
        loss = self.config.loss_scale * losses.nt_xent(z_a, z_b, self.config.temperature)
        metrics = {"embedding_std": losses.embedding_std(z_a)}
        return loss, ({"batch_stats": batch_stats}, metrics)
