"""Pieces that many methods share: a backbone with heads, forward passes over
views that thread BatchNorm statistics (one call per resolution, or per view),
and the method bases: `TwoViewMethod` (two views, `Encoder` with heads) and
`EMATeacherMethod` (an EMA target of some network parts)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslx.losses import embedding_std
from sslx.methods.base import Batch, Method, PyTree, apply_by_resolution
from sslx.methods.teacher import EMATarget
from sslx.models import heads


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


def forward_each_view(module: nn.Module, params: PyTree, batch_stats: PyTree,
                      views: Sequence[jax.Array], rng: jax.Array) -> tuple[list, PyTree]:
    """Train-mode `module` on each view in its own call (per-view BatchNorm
    statistics), threading the running statistics from call to call; each call
    gets its own rng (dropout, drop-path)."""
    outputs = []
    for i, view in enumerate(views):
        (out,), batch_stats = forward(module, params, batch_stats, [view], train=True,
                                      rng=jax.random.fold_in(rng, i))
        outputs.append(out)
    return outputs, batch_stats


def classification_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(loss, top1)`: the mean softmax cross-entropy of logits [N, C] against integer
    labels [N], and the share the top logit gets right (the pretext classifiers)."""
    logits = logits.astype(jnp.float32)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def wide_projector(config: ml_collections.ConfigDict, dtype: Any) -> heads.MLPHead:
    """Barlow Twins' and VICReg's projector: (Linear-BN-ReLU) x 2, then Linear,
    all without bias (BN's shift subsumes the hidden biases; the official final
    layer has none)."""
    return heads.MLPHead(hidden_dim=config.projector_hidden_dim, out_dim=config.projector_dim,
                         num_layers=3, use_bias=False, dtype=dtype)


class TwoViewMethod(Method):
    """A method on exactly two views of each image whose network is `Encoder` with
    the heads of `heads()`.

    `views_share_batch_norm`: both views in one forward call, so BatchNorm
    statistics span both (SimCLR's reference); otherwise each view is its own
    call and its own BatchNorm batch (SimSiam, BYOL, Barlow Twins, VICReg, NNCLR)."""

    views_share_batch_norm: bool = False

    @abc.abstractmethod
    def heads(self) -> dict[str, nn.Module]:
        """`{'projector': ..., 'predictor': ...}` (predictor optional) for `Encoder`."""

    def check_config(self) -> None:
        self.require_views(2)

    def network(self) -> Encoder:
        return Encoder(backbone=self.backbone(), **self.heads())

    def forward_views(self, params: PyTree, state: PyTree, views: Sequence[jax.Array],
                      rng: jax.Array) -> tuple[list[dict[str, jax.Array]], PyTree]:
        """Training-mode outputs of each view and the BatchNorm statistics updated."""
        if self.views_share_batch_norm:
            return forward(self.network(), params, state["batch_stats"], views, train=True,
                           rng=rng)
        return forward_each_view(self.network(), params, state["batch_stats"], views, rng)


class EMATeacherMethod(Method):
    """A method with an EMA copy ("target", "teacher", "momentum encoder") of parts of
    its network in `state['target']`, updated after every optimizer step with the
    momentum `config.method.<momentum_field>` rising to 1 along a half cosine."""

    teacher_parts: tuple[str, ...] = ("backbone", "projector")
    momentum_field: str = "base_momentum"

    @property
    def teacher(self) -> EMATarget:
        return EMATarget(parts=self.teacher_parts,
                         base_momentum=self.config[self.momentum_field],
                         total_steps=self.length.total_steps)

    def teacher_network(self) -> nn.Module:
        """The network the teacher's parts form."""
        return Encoder(backbone=self.backbone(), projector=self.heads()["projector"])

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        params, state = super().init(rng, batch)
        return params, {**state, "target": self.teacher.init(params, state["batch_stats"])}

    def after_update(self, params: PyTree, state: PyTree, step: jax.Array) -> PyTree:
        return {**state, "target": self.teacher.update(state["target"], params, step)}


class PredictionMethod(TwoViewMethod):
    """Two views; the online prediction of each view regresses a target of the other:
        loss = pair_loss(p1, z2) + pair_loss(p2, z1)
    SimSiam's targets are its own stop-gradient projections, BYOL's and MoCo v3's
    an EMA target network's (`targets`). Each view is its own forward call."""

    @abc.abstractmethod
    def pair_loss(self, p: jax.Array, z: jax.Array) -> jax.Array:
        """The loss of predictions `p` of one view against targets `z` of the other."""

    def targets(self, state: PyTree, views: Sequence[jax.Array], online: list[dict],
                rng: jax.Array) -> tuple[list[jax.Array], PyTree]:
        """`(z per view, new state)`: the online projections; the loss stops their
        gradient."""
        del views, rng
        return [jax.lax.stop_gradient(out["projection"]) for out in online], state

    def step_metrics(self, step: jax.Array) -> dict[str, jax.Array]:
        """Schedules worth logging (EMA momentum)."""
        del step
        return {}

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> tuple[jax.Array, tuple[PyTree, dict]]:
        online_rng, target_rng = jax.random.split(rng)
        views = batch["views"]
        online, batch_stats = self.forward_views(params, state, views, online_rng)
        z, state = self.targets({**state, "batch_stats": batch_stats}, views, online,
                                target_rng)
        p = [out["prediction"] for out in online]
        loss = self.pair_loss(p[0], z[1]) + self.pair_loss(p[1], z[0])
        metrics = {"embedding_std": embedding_std(online[0]["projection"]),
                   **self.step_metrics(step)}
        return loss, (state, metrics)
