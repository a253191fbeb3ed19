"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views.

The negatives of each anchor are all other views in the global batch — every
device and host — because the step sees the global batch. Both views go
through the network in one call, so BatchNorm statistics span both views, as
in the reference implementation.
"""

from __future__ import annotations

import jax

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree
from sslx.methods.common import Encoder, forward, init_variables
from sslx.models import build_backbone, heads

# configs/simclr_resnet50.py (Chen et al. 2020, Sec. 4 and Appendix B.9).
DEFAULTS = dict(temperature=0.1, projector_layers=2, projector_hidden_dim=2048,
                projector_dim=128)


@register("simclr", defaults=DEFAULTS)
class SimCLR(Method):
    """Config: `method.temperature`, `method.projector_layers` (2 = SimCLR v1,
    3 = SimCLR v2), `method.projector_hidden_dim`, `method.projector_dim`."""

    def check_config(self) -> None:
        counts = [group.count for group in self.config.views.values()]
        if sum(counts) != 2:
            raise ConfigError(f"SimCLR needs exactly 2 views; config.views has {sum(counts)} "
                              "crops: use one view group with count=2")
        if not self.config.method.temperature > 0:
            raise ConfigError(f"config.method.temperature={self.config.method.temperature} "
                              "must be > 0")

    @property
    def network(self) -> Encoder:
        cfg = self.config.method
        size = max(group.size for group in self.config.views.values())
        return Encoder(
            backbone=build_backbone(self.config.model, image_size=size, dtype=self.dtype),
            projector=heads.MLPHead(
                hidden_dim=cfg.projector_hidden_dim, out_dim=cfg.projector_dim,
                num_layers=cfg.projector_layers, output_norm=True, output_norm_scale=True,
                dtype=self.dtype),
        )

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        params, batch_stats = init_variables(self.network, rng, batch["views"][0])
        return params, {"batch_stats": batch_stats}

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        outputs, batch_stats = forward(self.network, params, state["batch_stats"],
                                       batch["views"], train=True, rng=rng)
        z_a, z_b = (out["projection"] for out in outputs)
        loss = losses.nt_xent(z_a, z_b, self.config.method.temperature)
        metrics = {"embedding_std": losses.embedding_std(z_a)}
        return loss, ({"batch_stats": batch_stats}, metrics)

    def embed(self, params: PyTree, state: PyTree, images: jax.Array) -> jax.Array:
        variables = {"params": params, "batch_stats": state["batch_stats"]}
        return self.network.apply(variables, images, train=False, features_only=True)["features"]
