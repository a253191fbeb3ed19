"""Weighted k-NN classification of embeddings (InstDisc / DINO protocol).

Each query's k nearest neighbours in the memory bank (cosine similarity) vote
for their labels with weight exp(similarity / temperature); the class with the
largest total wins. Computed in query batches on device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sslx.errors import DataError


def knn_accuracy(bank_features: np.ndarray, bank_labels: np.ndarray,
                 query_features: np.ndarray, query_labels: np.ndarray, *,
                 ks: Sequence[int] = (20, 200), temperature: float = 0.07,
                 batch_size: int = 1024) -> dict[int, float]:
    """Top-1 accuracy of the weighted k-NN classifier for each k in `ks`."""
    if (bank_labels < 0).any() or (query_labels < 0).any():
        raise DataError("k-NN needs labelled splits for both the memory bank and the queries; "
                        "set config.data.train_split / eval_split to labelled splits or "
                        "config.eval.knn=False")
    ks = tuple(min(k, len(bank_features)) for k in ks)
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    bank = _normalize(jnp.asarray(bank_features))
    bank_labels = jnp.asarray(bank_labels)
    correct = np.zeros(len(ks))
    for start in range(0, len(query_features), batch_size):
        queries = _normalize(jnp.asarray(query_features[start:start + batch_size]))
        predictions = _predict(bank, bank_labels, queries, ks, temperature, num_classes)
        correct += np.asarray(predictions == query_labels[start:start + batch_size]).sum(1)
    return {k: float(c) / len(query_features) for k, c in zip(ks, correct, strict=True)}


def _normalize(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes"))
def _predict(bank: jax.Array, bank_labels: jax.Array, queries: jax.Array,
             ks: tuple[int, ...], temperature: float, num_classes: int) -> jax.Array:
    similarity, index = jax.lax.top_k(queries @ bank.T, max(ks))
    votes = jax.nn.one_hot(bank_labels[index], num_classes) * jnp.exp(
        similarity / temperature)[..., None]
    return jnp.stack([jnp.argmax(votes[:, :k].sum(1), -1) for k in ks])
