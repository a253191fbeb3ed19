"""Linear classifiers on frozen features: the fast linear-probe protocol.

A multinomial logistic regression (scikit-learn's L-BFGS) on standardised
features, as in the fast protocols of SimCLR's and DINO's follow-ups: the
features are computed once, so a probe costs seconds to minutes instead of the
papers' 100 epochs of SGD over augmented images. The regularisation `C` is
chosen on a stratified held-out part of the training features, then the probe
is refitted on all of them. The evaluators `linear_probe` and `low_label` fit
these on the features of a run's splits.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sslx.errors import ConfigError

log = logging.getLogger("sslx")


def fit(features: np.ndarray, labels: np.ndarray, cost: float, max_iter: int) -> Pipeline:
    """A standardiser and a multinomial logistic regression of inverse regularisation
    `cost` fitted to `features` [N, D] and `labels` [N]."""
    probe = make_pipeline(StandardScaler(),
                          LogisticRegression(C=cost, max_iter=max_iter, tol=1e-4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(features, labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("linear probe (C=%g) stopped at max_iter=%d before converging; raise "
                    "max_iter of its evaluator", cost, max_iter)
    return probe


def topk_accuracy(probe: Pipeline, features: np.ndarray, labels: np.ndarray,
                  ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Share of `labels` among the probe's k most probable classes, for each k (a k
    above the number of classes counts every class)."""
    probabilities = probe.predict_proba(features)
    ranked = probe.classes_[np.argsort(-probabilities, axis=1, kind="stable")]
    labels = np.asarray(labels)[:, None]
    return {k: float((ranked[:, :k] == labels).any(axis=1).mean()) for k in ks}


def select_cost(features: np.ndarray, labels: np.ndarray, costs: Sequence[float], *,
                heldout_fraction: float, seed: int, max_iter: int) -> dict[float, float]:
    """Held-out top-1 of each `cost`: probes fitted on a stratified `1 - heldout_fraction`
    of the rows and scored on the rest."""
    fit_x, held_x, fit_y, held_y = train_test_split(
        features, labels, test_size=heldout_fraction, random_state=seed, stratify=labels)
    return {cost: topk_accuracy(fit(fit_x, fit_y, cost, max_iter), held_x, held_y, (1,))[1]
            for cost in costs}


def probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                   test_features: np.ndarray, test_labels: np.ndarray, *,
                   costs: Sequence[float], heldout_fraction: float = 0.1, seed: int = 0,
                   max_iter: int = 1000) -> dict[str, float]:
    """The fast linear probe: `C` of `costs` with the best held-out top-1 (the first on
    a tie; no held-out split when there is one cost), refitted on all the training
    rows. Returns test `top1`, `top5` and the chosen `cost`."""
    costs = check_costs(costs, "costs")
    if len(costs) == 1:
        cost = costs[0]
    else:
        heldout = select_cost(train_features, train_labels, costs,
                              heldout_fraction=heldout_fraction, seed=seed, max_iter=max_iter)
        cost = max(heldout, key=heldout.get)
        log.info("linear probe: held-out top-1 by C: %s; C=%g",
                 ", ".join(f"{c:g}: {a:.4f}" for c, a in heldout.items()), cost)
    accuracy = topk_accuracy(fit(train_features, train_labels, cost, max_iter),
                             test_features, test_labels)
    return {"top1": accuracy[1], "top5": accuracy[5], "cost": float(cost)}


def check_costs(costs: Sequence[float], field: str) -> tuple[float, ...]:
    """`costs` as a tuple of floats; `ConfigError` naming `field` unless one or more > 0."""
    costs = tuple(costs) if isinstance(costs, (tuple, list)) else (costs,)
    if not costs or any(not isinstance(c, (int, float)) or not c > 0 for c in costs):
        raise ConfigError(f"{field}={costs!r} must be one or more positive numbers "
                          "(inverse regularisation strengths C)")
    return tuple(float(c) for c in costs)

