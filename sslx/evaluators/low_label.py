"""Low-label and few-shot evaluation: the fast linear probe fitted on a few labels.

For each fraction of the train split (1% and 10%, as in the semi-supervised
tables of SimCLR and BYOL) and each number of shots per class, several seeded,
class-balanced subsets of the train split's labels fit a probe (with one fixed
`cost`: choosing it on held-out labels would spend labels beyond the budget),
scored on the eval split. Metrics are the mean top-1 over the seeds and its
standard deviation. The indices of every subset (rows of the train split in the
order the evaluation pipeline reads it) are saved beside the run, so a figure
can be reproduced or another library fed the same subsets.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from sslx import fs
from sslx.errors import ConfigError, DataError
from sslx.evaluators import register
from sslx.evaluators.linear_probe import FeatureFitEvaluator


def balanced_subset(labels: np.ndarray, per_class: dict[int, int], seed: int) -> np.ndarray:
    """Sorted row indices of `labels` holding `per_class[c]` rows of each class c, drawn
    without replacement by `seed`; `DataError` where a class has too few rows."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label, count in sorted(per_class.items()):
        rows = np.flatnonzero(labels == label)
        if len(rows) < count:
            raise DataError(f"class {label} has {len(rows)} labelled images, fewer than the "
                            f"{count} a subset needs")
        chosen.append(rng.choice(rows, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def fraction_per_class(labels: np.ndarray, fraction: float) -> dict[int, int]:
    """Rows per class of a class-balanced `fraction` of `labels`: that share of each
    class, rounded, and at least one."""
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): max(1, round(fraction * n)) for c, n in zip(classes, counts, strict=True)}


def subset_name(fraction: float | None = None, shots: int | None = None) -> str:
    """`1pct`, `10pct`, `12.5pct` for a fraction; `5shot` for shots per class."""
    return f"{fraction * 100:g}pct" if fraction is not None else f"{shots}shot"


@register("low_label", defaults=dict(
    fractions=(0.01, 0.1),    # class-balanced shares of the train split's labels
    shots=(1, 5, 10, 25),     # labelled images per class
    seeds=3,                  # subsets per fraction and per shot count
    cost=1.0,                 # the probe's inverse regularisation strength C
    max_iter=1000,            # L-BFGS iterations per fit
))
class LowLabel(FeatureFitEvaluator):
    """Metrics `<subset>_top1` (mean over `seeds`) and `<subset>_top1_std`, for each
    subset `1pct`, `10pct`, `1shot`, ... (`subset_name`). Subset indices go to
    `WORKDIR/evals/<name>/<subset>_seed<k>.npy`. Skipped (no metrics, one log line)
    when either split has unlabelled images."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.linear import check_costs  # imports scikit-learn

        where = f"config.evals.{name}"
        self.fractions = _check_numbers(config.fractions, f"{where}.fractions",
                                        lambda f: isinstance(f, (int, float)) and 0 < f <= 1,
                                        "fractions in (0, 1]")
        self.shots = _check_numbers(config.shots, f"{where}.shots",
                                    lambda s: isinstance(s, int) and s >= 1,
                                    "positive integers")
        if not (self.fractions or self.shots):
            raise ConfigError(f"{where} has neither fractions nor shots; give one of them "
                              f"or set --config.evals.{name}.enabled=False")
        if not (isinstance(config.seeds, int) and config.seeds >= 1):
            raise ConfigError(f"{where}.seeds={config.seeds!r} must be a positive integer")
        self.cost = check_costs(config.cost, f"{where}.cost")[0]
        super().__init__(name, config, run)

    def score(self, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
              test_y: np.ndarray) -> dict[str, float]:
        from sslx.evaluators.linear import fit, topk_accuracy

        subsets = {subset_name(fraction=f): fraction_per_class(train_y, f)
                   for f in self.fractions}
        subsets.update({subset_name(shots=s): dict.fromkeys(np.unique(train_y).tolist(), s)
                        for s in self.shots})
        metrics = {}
        for subset, per_class in subsets.items():
            accuracies = []
            for seed in range(self.config.seeds):
                rows = balanced_subset(train_y, per_class, seed)
                self._save(f"{subset}_seed{seed}", rows)
                probe = fit(train_x[rows], train_y[rows], self.cost, self.config.max_iter)
                accuracies.append(topk_accuracy(probe, test_x, test_y, (1,))[1])
            metrics[f"{subset}_top1"] = float(np.mean(accuracies))
            metrics[f"{subset}_top1_std"] = float(np.std(accuracies))
        return metrics

    def _save(self, stem: str, rows: np.ndarray) -> None:
        if jax.process_index() == 0:
            directory = fs.join(self.run.workdir, "evals", self.name)
            fs.makedirs(directory)
            fs.save_npy(fs.join(directory, f"{stem}.npy"), rows.astype(np.int64))


def _check_numbers(values: Any, where: str, valid: Any, what: str) -> tuple:
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    if not all(valid(v) for v in values):
        raise ConfigError(f"{where}={values!r} must be {what}")
    return values
