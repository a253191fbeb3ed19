"""The fast linear probe, low-label subsets and the collapse monitors, on features
whose answers are known; the evaluators' settings are checked before compiling."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest
from helpers import tiny_config

from sslx import evaluators, train
from sslx.errors import ConfigError, DataError
from sslx.evaluators import collapse, linear, low_label


def _blobs(n: int, classes: int = 10, dim: int = 32, spread: float = 0.3, seed: int = 0):
    """Linearly separable features: one well-separated centre per class, plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    labels = rng.integers(0, classes, n)
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32), labels


def test_probe_separates_separable_features_and_not_shuffled_labels():
    x, y = _blobs(1200)
    got = linear.probe_accuracy(x[:1000], y[:1000], x[1000:], y[1000:], costs=(0.1, 1.0))
    assert got["top1"] == got["top5"] == 1.0 and got["cost"] in (0.1, 1.0)
    shuffled = np.random.default_rng(1).permutation(y)
    chance = linear.probe_accuracy(x[:1000], shuffled[:1000], x[1000:], shuffled[1000:],
                                   costs=(1.0,))
    assert chance["top1"] < 0.25 and chance["top5"] < 0.75  # chance: 0.1 and 0.5


def test_topk_counts_a_label_among_the_k_most_probable_classes():
    x, y = _blobs(300, classes=4, spread=3.0)
    probe = linear.fit(x, y, 1.0, 1000)
    probabilities = probe.predict_proba(x)
    ranks = (probabilities > probabilities[np.arange(len(y)), y][:, None]).sum(1)
    got = linear.topk_accuracy(probe, x, y, (1, 2, 4))
    assert got == {k: float((ranks < k).mean()) for k in (1, 2, 4)} and got[4] == 1.0


def test_cost_is_chosen_on_held_out_training_rows():
    """With 4 informative and 200 noise dimensions and 60 rows, strong regularisation
    wins on held-out rows; the chosen cost is the one with the best held-out top-1."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 60)
    x = np.concatenate([y[:, None] * 1.0 + rng.normal(size=(120, 4)),
                        rng.normal(size=(120, 200))], axis=1)
    heldout = linear.select_cost(x, y, (1e-3, 1e3), heldout_fraction=0.5, seed=0, max_iter=500)
    assert heldout[1e-3] > heldout[1e3]
    got = linear.probe_accuracy(x, y, x, y, costs=(1e-3, 1e3), heldout_fraction=0.5)
    assert got["cost"] == 1e-3


def test_balanced_subsets_are_seeded_and_class_balanced():
    labels = np.repeat(np.arange(5), [100, 100, 100, 100, 37])
    per_class = low_label.fraction_per_class(labels, 0.01)
    assert per_class == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}  # rounded, at least one
    assert low_label.fraction_per_class(labels, 0.1) == {0: 10, 1: 10, 2: 10, 3: 10, 4: 4}
    rows = low_label.balanced_subset(labels, dict.fromkeys(range(5), 5), seed=0)
    assert np.bincount(labels[rows]).tolist() == [5] * 5 and len(set(rows)) == 25
    np.testing.assert_array_equal(rows, low_label.balanced_subset(
        labels, dict.fromkeys(range(5), 5), seed=0))
    assert not np.array_equal(rows, low_label.balanced_subset(
        labels, dict.fromkeys(range(5), 5), seed=1))
    with pytest.raises(DataError, match="class 4 has 37 labelled images, fewer than the 50"):
        low_label.balanced_subset(labels, dict.fromkeys(range(5), 50), seed=0)
    assert [low_label.subset_name(fraction=f) for f in (0.01, 0.1, 0.125)] == [
        "1pct", "10pct", "12.5pct"]
    assert low_label.subset_name(shots=5) == "5shot"


def test_rankme_of_a_rank_k_embedding_is_about_k():
    rng = np.random.default_rng(0)
    for k in (1, 7, 30):
        exact = np.linalg.qr(rng.normal(size=(500, k)))[0] @ np.linalg.qr(
            rng.normal(size=(64, k)))[0].T  # k equal singular values
        assert collapse.rankme(exact) == pytest.approx(k, rel=1e-3)
        gaussian = rng.normal(size=(2000, k)) @ rng.normal(size=(k, 64))
        assert 0.8 * k <= collapse.rankme(gaussian) <= k + 1e-3
    assert collapse.rankme(rng.normal(size=(4000, 64))) > 60


def test_std_of_normalised_embeddings_is_zero_when_collapsed():
    rng = np.random.default_rng(0)
    assert collapse.normalized_std(np.ones((100, 16)) + 1e-9 * rng.normal(
        size=(100, 16))) < 1e-6
    spread = collapse.normalized_std(rng.normal(size=(5000, 64)))
    assert spread == pytest.approx(1 / np.sqrt(64), rel=0.02)


@pytest.mark.parametrize("section, message", [
    ({"type": "linear_probe", "costs": (1.0, -1.0)},
     r"config\.evals\.e\.costs=\(1\.0, -1\.0\) must be one or more positive numbers"),
    ({"type": "linear_probe", "heldout_fraction": 1.0},
     r"config\.evals\.e\.heldout_fraction=1\.0 must be between 0 and 1"),
    ({"type": "low_label", "fractions": (0.01, 2.0)},
     r"config\.evals\.e\.fractions=\(0\.01, 2\.0\) must be fractions in \(0, 1\]"),
    ({"type": "low_label", "fractions": (), "shots": ()}, r"config\.evals\.e has neither"),
    ({"type": "low_label", "seeds": 0}, r"config\.evals\.e\.seeds=0 must be a positive"),
    ({"type": "collapse", "max_examples": 1}, r"config\.evals\.e\.max_examples=1 must be"),
    ({"type": "collapse", "data.eval_split": "validation"},
     r"no split 'validation'.*--config\.evals\.e\.enabled=False"),
])
def test_bad_settings_are_named_before_compiling(section, message, npz, tmp_path, monkeypatch):
    monkeypatch.setattr(train.Run, "init_state", lambda run: pytest.fail("compiled"))
    split = section.pop("data.eval_split", "test")
    run = train.prepare(tiny_config(npz=npz, **{"data.eval_split": split}), str(tmp_path))
    with pytest.raises((ConfigError, DataError), match=message):
        evaluators.build("e", ml_collections.ConfigDict(section), run)


def test_named_evaluators_come_from_the_config_or_their_type(npz, tmp_path):
    config = tiny_config(npz=npz, **{"evals.linear_probe.costs": (2.0,)})
    config.evals.unlock()
    del config.evals["low_label"]  # as in a run saved before the type existed
    run = train.prepare(config, str(tmp_path))
    built = evaluators.build_named(run, ["linear_probe", "low_label"])
    assert built["linear_probe"].config.costs == (2.0,)  # the section, though disabled
    assert built["low_label"].config.fractions == (0.01, 0.1)  # the type's defaults
    with pytest.raises(ConfigError, match=r"--evals names 'linear_prob'.*did you mean: "
                                          r"linear_probe"):
        evaluators.build_named(run, ["linear_prob"])
