"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn codes over prototypes.

Each crop goes through the backbone (one call per crop resolution), then the
features of all crops together through projector -> l2-normalise -> scores
against K unit prototypes: the projector's BatchNorm sees every crop in one
batch, as the official `forward_head` on the concatenated features. For each
of the first `num_assign_crops` crops (the global crops), Sinkhorn-Knopp over
the global batch turns its scores into soft codes (a constant: no gradient
flows through the codes); every other crop predicts them with a softmax at
`temperature` (`losses.swav_loss`).

Prototypes are born with unit rows and put back to unit rows after every
optimizer update (`project`), as the official code rewrites them before each
forward: the loss sees the stored rows themselves, so their gradient keeps its
radial part, and the optimizer (LARS, weight decay) acts on unit rows.

Queue (`method.queue_length` > 0): past projections of each assigned crop,
newest first, in method state [num_assign_crops, Q, D]. It is filled (FIFO,
one global batch per step) from step `queue_start_epoch * steps_per_epoch`
on, and its scores against the current prototypes join the batch's in
Sinkhorn once it is full, as the official code does. Shapes never change:
before that the queue is carried but masked out. It is one global queue of Q
entries (the official code keeps Q / world_size per GPU and concatenates them
in its distributed Sinkhorn: the same thing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree
from sslx.methods.common import forward
from sslx.models import heads


class SwAVNetwork(nn.Module):
    """backbone -> projector -> l2-normalise -> prototype scores.

    Returns `{'features', 'projection' (unit rows), 'scores' [B, K]}`; params
    `backbone`, `projector`, `prototypes/prototypes` [K, D]. `from_features=True`
    takes backbone features as `x` and runs the heads alone."""

    backbone: nn.Module
    projector: nn.Module
    num_prototypes: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, features_only: bool = False,
                 from_features: bool = False) -> dict[str, jax.Array]:
        features = x if from_features else self.backbone(x, train=train)
        if features_only:
            return {"features": features}
        projection = heads.l2_normalize(self.projector(features, train=train))
        scores = heads.Prototypes(self.num_prototypes, dtype=self.dtype,
                                  name="prototypes")(projection)
        return {"features": features, "projection": projection, "scores": scores}


# configs/swav_resnet50.py (Caron et al. 2020, Appendix A, the 800-epoch multi-crop run).
DEFAULTS = dict(num_prototypes=3000, projector_hidden_dim=2048, projector_dim=128,
                temperature=0.1, epsilon=0.05, sinkhorn_iterations=3, num_assign_crops=2,
                queue_length=0, queue_start_epoch=15.0)


@register("swav", defaults=DEFAULTS)
class SwAV(Method):
    """Config: `method.num_prototypes`, `method.projector_hidden_dim`,
    `method.projector_dim`, `method.temperature`, `method.epsilon`,
    `method.sinkhorn_iterations`, `method.num_assign_crops` (the first crops, in
    `config.views` order, whose codes are predicted), `method.queue_length`
    (0 = no queue), `method.queue_start_epoch`. Freeze the prototypes for the
    first epoch with `config.optim.frozen.prototypes = 1.0`."""

    batch_level_loss = "assigns its codes by Sinkhorn-Knopp over the batch"

    def check_config(self) -> None:
        cfg = self.config
        crops = self.spec.num_views
        if crops < 2 or not 1 <= cfg.num_assign_crops <= crops:
            raise ConfigError(f"config.method.num_assign_crops={cfg.num_assign_crops} must be "
                              f"in [1, {crops}] (the crops of config.views), and SwAV needs at "
                              "least 2 crops: each assigned crop is predicted from the others")
        for field in ("temperature", "epsilon"):
            if not cfg[field] > 0:
                raise ConfigError(f"config.method.{field}={cfg[field]} must be > 0")
        for field in ("num_prototypes", "sinkhorn_iterations"):
            if not cfg[field] >= 1:
                raise ConfigError(f"config.method.{field}={cfg[field]} must be >= 1")
        if not cfg.queue_length >= 0 or not cfg.queue_start_epoch >= 0:
            raise ConfigError(f"config.method.queue_length={cfg.queue_length} and "
                              f"queue_start_epoch={cfg.queue_start_epoch} must be >= 0")

    def network(self) -> SwAVNetwork:
        cfg = self.config
        return SwAVNetwork(
            backbone=self.backbone(),
            projector=heads.MLPHead(hidden_dim=cfg.projector_hidden_dim,
                                    out_dim=cfg.projector_dim, num_layers=2, dtype=self.dtype),
            num_prototypes=cfg.num_prototypes, dtype=self.dtype)

    @property
    def queue_start_step(self) -> int:
        """First step whose projections enter the queue."""
        return round(self.config.queue_start_epoch * self.length.steps_per_epoch)

    def queue_use_step(self, batch_size: int) -> int:
        """First step that uses the queue: once it is full."""
        length = self.config.queue_length
        return self.queue_start_step + math.ceil(length / batch_size)

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        params, state = super().init(rng, batch)
        cfg = self.config
        if cfg.queue_length:
            state["queue"] = jnp.zeros(
                (cfg.num_assign_crops, cfg.queue_length, cfg.projector_dim), jnp.float32)
        return params, state

    def project(self, params: PyTree) -> PyTree:
        """Unit prototype rows after every update."""
        return heads.normalize_prototypes(params)

    def forward_crops(self, params: PyTree, batch_stats: PyTree, views: Sequence[jax.Array],
                      rng: jax.Array) -> tuple[list[dict[str, jax.Array]], PyTree]:
        """Backbone features per crop resolution, then the heads once over all crops
        (their features share one shape, so `forward` makes them one call and one
        BatchNorm batch): `(outputs per crop, new batch_stats)`."""
        network = self.network()
        features, batch_stats = forward(network, params, batch_stats, views, train=True,
                                        rng=rng, features_only=True)
        return forward(network, params, batch_stats, [out["features"] for out in features],
                       train=True, from_features=True)

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        cfg = self.config
        outputs, batch_stats = self.forward_crops(params, state["batch_stats"],
                                                  batch["views"], rng)
        scores = [out["scores"].astype(jnp.float32) for out in outputs]
        swav = dict(num_assign_crops=cfg.num_assign_crops, temperature=cfg.temperature,
                    epsilon=cfg.epsilon, iterations=cfg.sinkhorn_iterations)
        loss = losses.swav_loss(scores, **swav)
        new_state = {"batch_stats": batch_stats}
        metrics = {"embedding_std": losses.embedding_std(outputs[0]["projection"])}
        if "queue" in state:
            queue = state["queue"]
            prototypes = jax.lax.stop_gradient(params["prototypes"]["prototypes"])
            queue_scores = jnp.einsum("aqd,kd->aqk", queue, prototypes.astype(jnp.float32))
            in_use = step >= self.queue_use_step(scores[0].shape[0])
            loss = jnp.where(in_use, losses.swav_loss(scores, **swav, queue_scores=queue_scores),
                             loss)
            projections = jnp.stack([out["projection"] for out in
                                     outputs[:cfg.num_assign_crops]]).astype(jnp.float32)
            new_state["queue"] = jnp.where(step >= self.queue_start_step,
                                           push(queue, jax.lax.stop_gradient(projections)), queue)
            metrics["queue_in_use"] = in_use.astype(jnp.float32)
        return loss, (new_state, metrics)


def push(queue: jax.Array, entries: jax.Array) -> jax.Array:
    """FIFO: `entries` [A, B, D] enter at the front of `queue` [A, Q, D] (newest
    first) and the oldest B rows fall off the end."""
    return jnp.concatenate([entries, queue], axis=1)[:, :queue.shape[1]]
