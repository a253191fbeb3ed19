"""Weighted k-NN accuracy against a brute-force numpy loop written from the protocol:
cosine similarity, the k most similar bank rows, each voting exp(sim / T) for its label.
The bank is streamed in chunks; the chunk size does not change a prediction."""

from __future__ import annotations

import numpy as np
import pytest

from sslx.errors import DataError
from sslx.evaluators.knn import knn_accuracy, knn_predictions

NUM_CLASSES = 5


def _data(bank_size: int, query_size: int, seed: int = 0, dim: int = 12):
    """Noisy class centroids, so the accuracies are far from both chance and 1."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(NUM_CLASSES, dim))

    def split(n: int):
        labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
        features = centroids[labels] + 1.5 * rng.normal(size=(n, dim))
        return (features * rng.uniform(0.5, 3.0, (n, 1))).astype(np.float32), labels

    return (*split(bank_size), *split(query_size))


def _brute_force_predictions(bank, bank_labels, queries, k, temperature) -> np.ndarray:
    bank = bank.astype(np.float64)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    predictions = []
    for query in queries.astype(np.float64):
        similarity = bank @ (query / np.linalg.norm(query))
        votes = np.zeros(NUM_CLASSES)
        for i in np.argsort(-similarity)[:k]:
            votes[bank_labels[i]] += np.exp(similarity[i] / temperature)
        predictions.append(np.argmax(votes))
    return np.array(predictions)


def _brute_force(bank, bank_labels, queries, query_labels, k, temperature) -> float:
    predictions = _brute_force_predictions(bank, bank_labels, queries, k, temperature)
    return float(np.mean(predictions == query_labels))


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_matches_brute_force_for_several_k(temperature):
    data = _data(bank_size=200, query_size=60)
    got = knn_accuracy(*data, ks=(1, 5, 20, 200), temperature=temperature)
    want = {k: _brute_force(*data, k, temperature) for k in (1, 5, 20, 200)}
    assert got == want
    assert 0.3 < want[20] < 0.95  # the data separates the classes, not perfectly


def test_k_larger_than_the_bank_votes_with_the_whole_bank():
    data = _data(bank_size=30, query_size=40, seed=1)
    [value] = knn_accuracy(*data, ks=(50,), temperature=0.1).values()
    assert value == _brute_force(*data, 30, 0.1)


def test_query_batches_give_the_same_accuracy():
    """Batches smaller than the queries and not dividing them (50 = 7 x 7 + 1)."""
    data = _data(bank_size=80, query_size=50, seed=2)
    whole = knn_accuracy(*data, ks=(3, 10), temperature=0.07, batch_size=1024)
    batched = knn_accuracy(*data, ks=(3, 10), temperature=0.07, batch_size=7)
    assert batched == whole == {k: _brute_force(*data, k, 0.07) for k in (3, 10)}


def test_streamed_bank_chunks_give_the_same_predictions():
    """Bank chunks of 1 and 3 rows (fewer than k), 7 and 64 (not dividing the 80 rows),
    the whole bank and more: every prediction is the brute-force one."""
    bank, bank_labels, queries, _ = _data(bank_size=80, query_size=50, seed=5)
    ks = (5, 20)
    want = np.stack([_brute_force_predictions(bank, bank_labels, queries, k, 0.07) for k in ks])
    for chunk in (1, 3, 7, 64, 80, 500):
        got = knn_predictions(bank, bank_labels, queries, ks=ks, temperature=0.07, batch_size=16,
                              bank_batch_size=chunk)
        np.testing.assert_array_equal(got, want, err_msg=f"bank chunks of {chunk}")


def test_a_query_in_the_bank_is_its_own_nearest_neighbour():
    bank, labels, _, _ = _data(bank_size=40, query_size=1, seed=3)
    assert knn_accuracy(bank, labels, bank, labels, ks=(1,)) == {1: 1.0}


@pytest.mark.parametrize("unlabelled", ["bank", "queries"])
def test_unlabelled_split_is_refused(unlabelled):
    bank, bank_labels, queries, query_labels = _data(bank_size=20, query_size=10, seed=4)
    if unlabelled == "bank":
        bank_labels = np.full_like(bank_labels, -1)
    else:
        query_labels = np.full_like(query_labels, -1)
    with pytest.raises(DataError, match="labelled splits"):
        knn_accuracy(bank, bank_labels, queries, query_labels, ks=(5,))
