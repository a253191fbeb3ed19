"""Top-k accuracy on `config.data.eval_split` of a classifier the train state holds:

- `classifier`: the method's own head of the labels, the supervised baseline's
  and a fine-tuned network's (`configs/supervised_*.py`), for methods with a
  `classify(params, state, images) -> logits` (eval mode);
- `online_probe`: the online linear probe trained beside a self-supervised run
  (`sslx.online_probe`, on where `config.online_probe.num_classes > 0`), on the
  features the evaluators read (`Method.embed`).

Both stream the split batch by batch over the mesh; the hits are counted inside
the jitted call, so every host gets the same figures.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from sslx import sharding
from sslx.errors import ConfigError
from sslx.evaluators import register
from sslx.evaluators.base import Evaluator


def correct_counts(logits: jax.Array, labels: jax.Array, counted: jax.Array,
                   ks: tuple[int, ...]) -> jax.Array:
    """int32 [len(ks) + 1]: the counted rows whose label is among the top k logits,
    for each k of `ks`, then the number of counted rows."""
    ranked = jnp.argsort(-logits.astype(jnp.float32), axis=-1)[:, :max(ks)]
    hits = ranked == labels[:, None]
    per_k = [jnp.sum(jnp.any(hits[:, :k], axis=1) & counted) for k in ks]
    return jnp.stack([*per_k, jnp.sum(counted)]).astype(jnp.int32)


class TopKAccuracy(Evaluator):
    """Metrics `top<k>` for each k of `ks`, over the labelled images of the eval split,
    of the logits `logits(state, images)` of a subclass."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.embed import check_split  # imports TensorFlow

        super().__init__(name, config, run)
        ks = tuple(config.ks)
        if not ks or not all(isinstance(k, int) and k >= 1 for k in ks):
            raise ConfigError(f"config.evals.{name}.ks={ks!r} must be one or more positive "
                              "integers")
        check_split(run.config, run.config.data.eval_split, "config.data.eval_split",
                    f"--config.evals.{name}.enabled=False")
        self._counts = None  # jitted on first use, once per evaluator

    @abc.abstractmethod
    def logits(self, state: Any, images: jax.Array) -> jax.Array:
        """Class logits [B, classes] of images [B, S, S, 3] under the train state."""

    @abc.abstractmethod
    def num_classes(self) -> int:
        """How many classes the logits have (a k above it counts every row)."""

    def evaluate(self, state: Any) -> dict[str, float]:
        from sslx.evaluators.embed import eval_batches

        run = self.run
        if self._counts is None:
            ks = tuple(min(k, self.num_classes()) for k in self.config.ks)

            def counts(state, images, labels, valid):
                return correct_counts(self.logits(state, images), labels, valid & (labels >= 0),
                                      ks)

            self._counts = jax.jit(counts, out_shardings=sharding.replicated(run.mesh))
        total = jnp.zeros(len(self.config.ks) + 1, jnp.int32)
        for images, labels, valid in eval_batches(run.config, run.config.data.eval_split,
                                                  run.method.spec, run.mesh):
            total = total + self._counts(state, images, labels, valid)
        total = jax.device_get(total)
        seen = max(int(total[-1]), 1)
        return {f"top{k}": float(hits) / seen
                for k, hits in zip(self.config.ks, total[:-1], strict=True)}


@register("classifier", defaults=dict(
    ks=(1, 5),  # top-k accuracies reported
))
class ClassifierAccuracy(TopKAccuracy):
    """The method's own classification head (`Method.classify`)."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        super().__init__(name, config, run)
        self.require_method("classify", "supervised")

    def logits(self, state: Any, images: jax.Array) -> jax.Array:
        return self.run.method.classify(state.params, state.method_state, images)

    def num_classes(self) -> int:
        return self.run.method.config.num_classes


@register("online_probe", defaults=dict(
    ks=(1, 5),  # top-k accuracies reported
))
class OnlineProbeAccuracy(TopKAccuracy):
    """The online linear probe (`TrainState.probe`) on the embedded images."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        if run.probe is None:
            raise ConfigError(
                f"config.evals.{name} reads the online linear probe, which "
                "config.online_probe.num_classes=0 leaves out: set it to the number of classes "
                f"of config.data.train_split, or set config.evals.{name}.enabled=False")
        super().__init__(name, config, run)

    def logits(self, state: Any, images: jax.Array) -> jax.Array:
        features = self.run.method.embed(state.params, state.method_state, images)
        return self.run.probe.logits(state.probe["params"], features)

    def num_classes(self) -> int:
        return self.run.probe.num_classes
