"""Collapse monitors: is the encoder still spreading images apart?

Two figures of the eval split's embeddings (its first `max_examples` images):
- `std`: the per-dimension standard deviation of the l2-normalised embeddings,
  averaged over dimensions (SimSiam, Fig. 2). A collapsed encoder gives 0; unit
  vectors spread evenly over D dimensions give about 1/sqrt(D).
- `rankme`: the effective rank of the embeddings (RankMe, Garrido et al. 2023):
  exp of the entropy of their normalised singular values, between 1 and
  min(N, D); k for embeddings spread evenly over k directions. Its fall
  signals dimensional collapse, which `std` can miss.
One warning line is logged when either falls below its threshold.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import ml_collections
import numpy as np

from sslx.errors import ConfigError
from sslx.evaluators import register
from sslx.evaluators.base import Evaluator

log = logging.getLogger("sslx")


def rankme(embeddings: np.ndarray, epsilon: float = 1e-7) -> float:
    """The effective rank exp(-sum p log p) of embeddings [N, D], p the singular values
    divided by their sum (plus `epsilon`, as the paper's definition)."""
    singular = np.linalg.svd(np.asarray(embeddings, np.float64), compute_uv=False)
    p = singular / max(singular.sum(), np.finfo(np.float64).tiny) + epsilon
    return float(np.exp(-np.sum(p * np.log(p))))


def normalized_std(embeddings: np.ndarray) -> float:
    """Mean over dimensions of the standard deviation of the unit-norm embeddings."""
    x = np.asarray(embeddings, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return float(x.std(axis=0).mean())


@register("collapse", defaults=dict(
    max_examples=2048,   # eval-split images embedded (the first ones)
    min_rankme=8.0,      # warn below this effective rank
    min_std_ratio=0.1,   # warn below this fraction of 1/sqrt(D) for `std`
))
class Collapse(Evaluator):
    """Metrics `std` and `rankme` of `config.data.eval_split`'s first `max_examples`
    embeddings (labels are not needed)."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.embed import check_split  # imports TensorFlow

        super().__init__(name, config, run)
        where = f"config.evals.{name}"
        if not (isinstance(config.max_examples, int) and config.max_examples >= 2):
            raise ConfigError(f"{where}.max_examples={config.max_examples!r} must be an "
                              "integer >= 2")
        for field in ("min_rankme", "min_std_ratio"):
            if not isinstance(config[field], (int, float)) or config[field] < 0:
                raise ConfigError(f"{where}.{field}={config[field]!r} must be a number >= 0 "
                                  "(0: never warn)")
        check_split(run.config, run.config.data.eval_split, "config.data.eval_split",
                    f"--config.evals.{name}.enabled=False")

    def evaluate(self, state: Any) -> dict[str, float]:
        from sslx.evaluators.embed import embed_split

        features, _ = embed_split(self.run.method, state.params, state.method_state,
                                  self.run.config, self.run.config.data.eval_split,
                                  self.run.mesh, max_examples=self.config.max_examples)
        metrics = {"std": normalized_std(features), "rankme": rankme(features)}
        floor = self.config.min_std_ratio / math.sqrt(features.shape[1])
        if metrics["rankme"] < self.config.min_rankme or metrics["std"] < floor:
            log.warning("step %d: the embeddings may be collapsing: rankme %.2f (warned below "
                        "%g), std %.4g (warned below %.4g = %g/sqrt(%d))", int(state.step),
                        metrics["rankme"], self.config.min_rankme, metrics["std"], floor,
                        self.config.min_std_ratio, features.shape[1])
        return metrics
