"""The contract between a self-supervised method and the training loop.

`train.py` knows methods only through this interface: a method builds its
networks and extra state, computes its loss from a batch of views, updates its
state after each optimizer step (EMA teachers) and embeds images for
evaluation. Everything is a pure function over pytrees, so the loop can jit,
shard, checkpoint and resume any method the same way.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

PyTree = Any
Batch = dict[str, Any]
Metrics = dict[str, jax.Array]
LossOutput = tuple[jax.Array, tuple[PyTree, Metrics]]


@dataclasses.dataclass(frozen=True)
class TrainLength:
    """How long the run is, for schedules that live inside a method (EMA momentum,
    teacher temperature, queue start)."""

    total_steps: int
    steps_per_epoch: int


class Method(abc.ABC):
    """One self-supervised method.

    A batch is `{'views': (v0, v1, ...), 'label': [B]}` where each view is a float
    image array [B, H, W, 3] (normalised), ordered as `config.views` describes:
    larger crops first. Methods that need more inputs (masks) read more keys.

    `params` are what the optimizer trains. `state` is everything else the method
    carries between steps: BatchNorm statistics, EMA teacher weights, centers,
    queues. Both are plain pytrees of arrays.
    """

    def __init__(self, config: ml_collections.ConfigDict, length: TrainLength):
        self.config = config
        self.length = length
        self.dtype = jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32

    def check_config(self) -> None:
        """Raise `sslx.config_checks.ConfigError` for settings the method cannot use
        (e.g. a wrong number of views); runs before anything is compiled."""
        return None

    @abc.abstractmethod
    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        """Returns `(params, state)` for an example batch (shapes only matter)."""

    @abc.abstractmethod
    def loss(
        self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array, step: jax.Array
    ) -> LossOutput:
        """`(loss, (new_state, metrics))`; differentiated with respect to `params`.

        The batch is the global batch: statistics over it (negatives, BatchNorm,
        centers) are global across devices and hosts by construction."""

    def after_update(self, params: PyTree, state: PyTree, step: jax.Array) -> PyTree:
        """State update after the optimizer has produced the new `params`
        (EMA teachers). `step` is the step that was just taken."""
        del params, step
        return state

    @abc.abstractmethod
    def embed(self, params: PyTree, state: PyTree, images: jax.Array) -> jax.Array:
        """Backbone features [N, D] (no projector) of images [N, H, W, 3], in eval mode."""

    def backbone_variables(self, params: PyTree, state: PyTree) -> PyTree:
        """`{'params', 'batch_stats'}` of the backbone that `embed` runs, for exporting
        it alone: by default the trained network's `backbone` submodule."""
        return {"params": params["backbone"],
                "batch_stats": state.get("batch_stats", {}).get("backbone", {})}


def apply_by_resolution(
    apply_fn: Callable[[jax.Array], Any], views: Sequence[jax.Array]
) -> list[Any]:
    """Runs `apply_fn` once per run of consecutive same-shaped views (one forward per
    resolution, not per crop, as multi-crop recipes do) and splits the outputs back
    into one entry per view. `apply_fn` maps [n*B, H, W, C] to a pytree with a
    leading batch axis."""
    outputs: list[Any] = []
    start = 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        group = views[start:end]
        out = apply_fn(jnp.concatenate(group, axis=0) if len(group) > 1 else group[0])
        parts = len(group)
        for i in range(parts):
            outputs.append(jax.tree.map(lambda a, i=i, n=parts: _chunk(a, i, n), out))
        start = end
    return outputs


def _chunk(array: jax.Array, index: int, parts: int) -> jax.Array:
    size = array.shape[0] // parts
    return array[index * size:(index + 1) * size]
