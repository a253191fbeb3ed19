"""The fast linear probe as an evaluator: `sslx.evaluators.linear` on the features of
the run's train and eval splits."""

from __future__ import annotations

import logging
from typing import Any

import ml_collections

from sslx.errors import ConfigError
from sslx.evaluators import register
from sslx.evaluators.base import Evaluator

log = logging.getLogger("sslx")


@register("linear_probe", defaults=dict(
    costs=(0.01, 0.1, 1.0, 10.0),  # inverse regularisation strengths C swept
    heldout_fraction=0.1,          # of the train split, for choosing C
    max_iter=1000,                 # L-BFGS iterations per fit
    seed=0,                        # of the held-out split
))
class LinearProbe(Evaluator):
    """`config.data.train_split`'s features fit the probe, `config.data.eval_split`'s
    are scored: metrics `top1`, `top5`, and the chosen `cost`. Every host fits the
    same probe on the same gathered features. Skipped (no metrics, one log line)
    when either split has unlabelled images."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.embed import check_labelled_splits  # imports TensorFlow
        from sslx.evaluators.linear import check_costs  # imports scikit-learn

        super().__init__(name, config, run)
        where = f"config.evals.{name}"
        self.costs = check_costs(config.costs, f"{where}.costs")
        if not 0 < config.heldout_fraction < 1:
            raise ConfigError(f"{where}.heldout_fraction={config.heldout_fraction!r} must be "
                              "between 0 and 1 (exclusive)")
        check_max_iter(config.max_iter, f"{where}.max_iter")
        check_labelled_splits(run.config, f"--config.evals.{name}.enabled=False")

    def evaluate(self, state: Any) -> dict[str, float]:
        from sslx.evaluators.embed import labelled_features
        from sslx.evaluators.linear import probe_accuracy

        splits = labelled_features(self.run, state, self.name)
        if splits is None:
            return {}
        (train_x, train_y), (test_x, test_y) = splits
        return probe_accuracy(train_x, train_y, test_x, test_y, costs=self.costs,
                              heldout_fraction=self.config.heldout_fraction,
                              seed=self.config.seed, max_iter=self.config.max_iter)


def check_max_iter(value: Any, where: str) -> None:
    """`ConfigError` naming `where` unless `value` is a positive integer."""
    if not (isinstance(value, int) and value >= 1):
        raise ConfigError(f"{where}={value!r} must be a positive integer")
