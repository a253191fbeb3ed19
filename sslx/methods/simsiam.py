"""SimSiam (Chen & He 2021): a predictor on one view regresses the stop-gradient
projection of the other view through the same encoder.

    loss = 0.5 * D(p1, stopgrad(z2)) + 0.5 * D(p2, stopgrad(z1)),  D = negative cosine

The class is also the base of BYOL and MoCo v3, which are this method with an
EMA target network for `z` (`targets`) and another `pair_loss`. As in the
three reference implementations, each view goes through the network in its own
call, so BatchNorm statistics are per view (over the global batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, Metrics, PyTree
from sslx.methods.common import Encoder, forward, init_variables
from sslx.models import build_backbone, heads


def forward_each_view(module: nn.Module, params: PyTree, batch_stats: PyTree,
                      views: Sequence[jax.Array], rng: jax.Array) -> tuple[list, PyTree]:
    """Train-mode `module` on each view in its own call (per-view BatchNorm
    statistics), threading the running statistics from call to call."""
    outputs = []
    for i, view in enumerate(views):
        (out,), batch_stats = forward(module, params, batch_stats, [view], train=True,
                                      rng=jax.random.fold_in(rng, i))
        outputs.append(out)
    return outputs, batch_stats


# configs/simsiam_resnet50.py (Chen & He 2021, Sec. 3 and Appendix A).
DEFAULTS = dict(projector_layers=3, projector_hidden_dim=2048, projector_dim=2048,
                predictor_hidden_dim=512)


@register("simsiam", defaults=DEFAULTS)
class SimSiam(Method):
    """Config: `method.projector_layers` (3 ImageNet, 2 CIFAR), `method.projector_hidden_dim`,
    `method.projector_dim`, `method.predictor_hidden_dim` (the 512 bottleneck)."""

    def check_config(self) -> None:
        counts = [group.count for group in self.config.views.values()]
        if sum(counts) != 2:
            raise ConfigError(f"{type(self).__name__} needs exactly 2 views; config.views has "
                              f"{sum(counts)} crops: use one view group with count=2")

    def projector(self) -> nn.Module:
        """3 Dense layers, BN on every output, the last BN without affine params."""
        cfg = self.config.method
        return heads.MLPHead(cfg.projector_hidden_dim, cfg.projector_dim,
                             num_layers=cfg.projector_layers, output_norm=True, dtype=self.dtype)

    def predictor(self) -> nn.Module:
        """Dense-BN-ReLU bottleneck, then a plain Dense back to the projection width."""
        cfg = self.config.method
        return heads.MLPHead(cfg.predictor_hidden_dim, cfg.projector_dim, dtype=self.dtype)

    def pair_loss(self, p: jax.Array, z: jax.Array) -> jax.Array:
        """The loss of predictions `p` of one view against targets `z` of the other."""
        return 0.5 * losses.negative_cosine(p, z)

    def backbone(self) -> nn.Module:
        size = max(group.size for group in self.config.views.values())
        return build_backbone(self.config.model, image_size=size, dtype=self.dtype)

    @property
    def network(self) -> Encoder:
        return Encoder(backbone=self.backbone(), projector=self.projector(),
                       predictor=self.predictor())

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        params, batch_stats = init_variables(self.network, rng, batch["views"][0])
        return params, {"batch_stats": batch_stats}

    def targets(self, state: PyTree, views: Sequence[jax.Array], online: list[dict],
                rng: jax.Array) -> tuple[list[jax.Array], PyTree]:
        """`(z per view, new state)`: what the predictions regress to. SimSiam's are
        the online projections themselves; the loss stops their gradient."""
        del views, rng
        return [out["projection"] for out in online], state

    def step_metrics(self, step: jax.Array) -> Metrics:
        """Schedules worth logging (EMA momentum)."""
        del step
        return {}

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        online_rng, target_rng = jax.random.split(rng)
        views = batch["views"]
        online, batch_stats = forward_each_view(self.network, params, state["batch_stats"],
                                                views, online_rng)
        z, state = self.targets({**state, "batch_stats": batch_stats}, views, online,
                                target_rng)
        p = [out["prediction"] for out in online]
        loss = self.pair_loss(p[0], z[1]) + self.pair_loss(p[1], z[0])
        metrics = {"embedding_std": losses.embedding_std(online[0]["projection"]),
                   **self.step_metrics(step)}
        return loss, (state, metrics)

    def embed(self, params: PyTree, state: PyTree, images: jax.Array) -> jax.Array:
        variables = {"params": params, "batch_stats": state["batch_stats"]}
        return self.network.apply(variables, images, train=False, features_only=True)["features"]
