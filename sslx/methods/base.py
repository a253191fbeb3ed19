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
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx.errors import ConfigError
from sslx.models import build_backbone

if TYPE_CHECKING:  # the data package imports TensorFlow, which recipes need not load
    from sslx.data.spec import InputSpec

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
    image array [B, H, W, 3] (normalised), ordered as `spec.crops` describes:
    larger crops first. Methods that need more inputs (masks) name them in
    `inputs` and read more keys.

    `params` are what the optimizer trains. `state` is everything else the method
    carries between steps: BatchNorm statistics, EMA teacher weights, centers,
    queues. Both are plain pytrees of arrays.

    A method builds its networks from one hook, `network()`: a module mapping
    `(images, train=..., features_only=...)` to `{'features': ..., ...}` whose
    backbone is its `backbone` submodule. `init` and `embed` work from it by
    default; `embed_variables` says which weights embed (an EMA teacher's, say).
    """

    inputs: tuple[str, ...] = ("views", "label")
    # Whether the loss learns from the labels (supervised): training on a split with
    # unlabelled images is then an error, before anything compiles.
    needs_labels: bool = False
    # Why the loss is not a mean of independent per-example terms (negatives,
    # statistics or normalisation over the batch, state updated once per batch),
    # completing "method 'name' ..."; None where it is. Gradient accumulation
    # (`config.train.accumulation_steps` > 1) averages the gradients of
    # microbatches, which equals the global batch's gradient only for None, so
    # any other value refuses it (`sslx.config_checks`). A method opts in by
    # setting None after checking its loss, heads included.
    batch_level_loss: str | None = (
        "does not declare its loss a mean of per-example terms (Method.batch_level_loss)")

    def __init__(self, config: ml_collections.ConfigDict, *, model: ml_collections.ConfigDict,
                 spec: InputSpec, length: TrainLength, dtype: str = "float32"):
        self.config = config  # this method's section, `config.method`
        self.model = model
        self.spec = spec
        self.length = length
        self.dtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32

    def check_config(self) -> None:
        """Raise `sslx.config_checks.ConfigError` for settings the method cannot use
        (e.g. a wrong number of views); runs before anything is compiled."""
        return None

    def require_views(self, count: int) -> None:
        """`ConfigError` unless the batch holds exactly `count` views."""
        if self.spec.num_views != count:
            raise ConfigError(f"{type(self).__name__} needs exactly {count} views; config.views "
                              f"has {self.spec.num_views} crops: use one view group with "
                              f"count={count}")

    def backbone(self) -> nn.Module:
        """The configured backbone at the run's largest crop size."""
        return build_backbone(self.model, image_size=self.spec.image_size,
                              dtype=self.dtype)

    @abc.abstractmethod
    def network(self) -> nn.Module:
        """The trained network (see the class docstring)."""

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        """Returns `(params, state)` for an example batch (shapes only matter);
        by default the network's params and `{'batch_stats'}`."""
        params, batch_stats = init_variables(self.network(), rng, batch["views"][0])
        return params, {"batch_stats": batch_stats}

    @abc.abstractmethod
    def loss(
        self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array, step: jax.Array
    ) -> LossOutput:
        """`(loss, (new_state, metrics))`; differentiated with respect to `params`.

        The batch is the global batch: statistics over it (negatives, BatchNorm,
        centers) are global across devices and hosts by construction."""

    def frozen_params(self) -> tuple[str, ...]:
        """Regexes of param paths (`sslx.optim.param_paths`: `backbone/...`) that no
        optimizer step may move during the whole run, whatever `config.optim` says
        (the backbone of a linear probe). The trainer adds them to the optimizer's
        freeze rules, so weight decay cannot move them either; none by default."""
        return ()

    def project(self, params: PyTree) -> PyTree:
        """The params an optimizer update produced, put back where the method keeps
        them (SwAV's unit prototype rows); identity by default. The trainer applies
        it after every update, before `after_update`."""
        return params

    def after_update(self, params: PyTree, state: PyTree, step: jax.Array) -> PyTree:
        """State update after the optimizer has produced the new `params`
        (EMA teachers). `step` is the step that was just taken."""
        del params, step
        return state

    def embed_variables(self, params: PyTree, state: PyTree) -> PyTree:
        """`{'params', 'batch_stats'}` of the network `embed` runs: the trained one."""
        return {"params": params, "batch_stats": state["batch_stats"]}

    def embed(self, params: PyTree, state: PyTree, images: jax.Array) -> jax.Array:
        """Backbone features [N, D] (no projector) of images [N, H, W, 3], in eval mode."""
        return self.network().apply(self.embed_variables(params, state), images, train=False,
                                    features_only=True)["features"]

    def backbone_variables(self, params: PyTree, state: PyTree) -> PyTree:
        """`{'params', 'batch_stats'}` of the backbone that `embed` runs, for exporting
        it alone: the `backbone` submodule of `embed_variables`."""
        variables = self.embed_variables(params, state)
        return {"params": variables["params"]["backbone"],
                "batch_stats": variables["batch_stats"].get("backbone", {})}


def init_variables(module: nn.Module, rng: jax.Array, images: jax.Array,
                   **kwargs: Any) -> tuple[PyTree, PyTree]:
    """`(params, batch_stats)` of a module that takes `(images, train=...)`."""
    params_rng, dropout_rng = jax.random.split(rng)
    variables = module.init({"params": params_rng, "dropout": dropout_rng}, images,
                            train=False, **kwargs)
    return variables["params"], variables.get("batch_stats", {})


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
