"""The fast linear probe as an evaluator: `sslx.evaluators.linear` on the features of
the run's train and eval splits."""

from __future__ import annotations

import abc
from typing import Any

import ml_collections
import numpy as np

from sslx.errors import ConfigError
from sslx.evaluators import register
from sslx.evaluators.base import Evaluator


class FeatureFitEvaluator(Evaluator):
    """An evaluator that fits on the train split's features and scores the eval
    split's (`score`): both splits embedded once per step for all such evaluators
    (`embed.split_features`), every host fitting the same on the same rows.
    Skipped (no metrics, one log line) when either split has unlabelled images.
    Its section has `max_iter`, the L-BFGS iterations of a fit."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.embed import check_labelled_splits  # imports TensorFlow

        super().__init__(name, config, run)
        if not (isinstance(config.max_iter, int) and config.max_iter >= 1):
            raise ConfigError(f"config.evals.{name}.max_iter={config.max_iter!r} must be a "
                              "positive integer")
        check_labelled_splits(run.config, f"--config.evals.{name}.enabled=False")

    def evaluate(self, state: Any) -> dict[str, float]:
        from sslx.evaluators.embed import labelled_features

        splits = labelled_features(self.run, state, self.name)
        return {} if splits is None else self.score(*splits[0], *splits[1])

    @abc.abstractmethod
    def score(self, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
              test_y: np.ndarray) -> dict[str, float]:
        """The metrics of fits on train features [N, D] and labels [N], scored on the
        eval split's."""


@register("linear_probe", defaults=dict(
    costs=(0.01, 0.1, 1.0, 10.0),  # inverse regularisation strengths C swept
    heldout_fraction=0.1,          # of the train split, for choosing C
    max_iter=1000,                 # L-BFGS iterations per fit
    seed=0,                        # of the held-out split
))
class LinearProbe(FeatureFitEvaluator):
    """`config.data.train_split`'s features fit the probe, `config.data.eval_split`'s
    are scored: metrics `top1`, `top5`, and the chosen `cost`."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.linear import check_costs  # imports scikit-learn

        where = f"config.evals.{name}"
        self.costs = check_costs(config.costs, f"{where}.costs")
        if not 0 < config.heldout_fraction < 1:
            raise ConfigError(f"{where}.heldout_fraction={config.heldout_fraction!r} must be "
                              "between 0 and 1 (exclusive)")
        super().__init__(name, config, run)

    def score(self, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
              test_y: np.ndarray) -> dict[str, float]:
        from sslx.evaluators.linear import probe_accuracy

        return probe_accuracy(train_x, train_y, test_x, test_y, costs=self.costs,
                              heldout_fraction=self.config.heldout_fraction,
                              seed=self.config.seed, max_iter=self.config.max_iter)
