"""Weighted k-NN classification of embeddings (InstDisc / DINO protocol), streamed.

Each query's k nearest neighbours in the memory bank (cosine similarity) vote
for their labels with weight exp(similarity / temperature); the class with the
largest total wins.

The memory bank is never held whole, on a host or on a device. It arrives in
chunks (in the evaluator: each batch of the train split as soon as it is
embedded), and every chunk is merged into each query's running nearest
neighbours: the top k of the previous k and the chunk's similarities
(`merge`). Once the whole bank has streamed past, the neighbours vote
(`predict`). Ties keep the earlier bank row first, as a top k over the whole
bank does, so the result does not depend on the chunk size.

Queries are laid out `[n, B, D]` (n batches of B, the last padded and masked):
in the evaluator `B` is the global eval batch, split over the mesh's `data`
axis, so each device holds its share of the queries and of their neighbours
and sees every bank chunk once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from sslx import sharding
from sslx.errors import ConfigError, DataError
from sslx.evaluators import register
from sslx.evaluators.base import Evaluator

log = logging.getLogger("sslx")


class Neighbours(NamedTuple):
    """The running k nearest bank rows of every query, and what the bank held so far."""

    similarity: jax.Array  # float32 [n, B, K], descending; -inf while fewer than K rows seen
    label: jax.Array  # int32 [n, B, K], -1 where no row
    max_label: jax.Array  # int32 [], the largest bank label seen (-1: none)
    unlabelled: jax.Array  # int32 [], bank rows seen without a label
    count: jax.Array  # int32 [], bank rows seen


def empty_neighbours(shape: Sequence[int], k: int) -> Neighbours:
    """No neighbours yet for queries of batch shape `shape` ([n, B])."""
    shape = (*shape, k)
    return Neighbours(jnp.full(shape, -jnp.inf, jnp.float32), jnp.full(shape, -1, jnp.int32),
                      *(jnp.full((), value, jnp.int32) for value in (-1, 0, 0)))


def normalize(x: jax.Array) -> jax.Array:
    """Rows scaled to unit norm (zero rows stay zero)."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def merge(neighbours: Neighbours, queries: jax.Array, bank: jax.Array, bank_labels: jax.Array,
          bank_valid: jax.Array) -> Neighbours:
    """`neighbours` of unit `queries` [n, B, D] updated with a chunk of bank rows
    `bank` [C, D] (any norm), their labels [C] and `bank_valid` [C] (False: padding).
    One query batch at a time, so [B, K + C] is the largest intermediate."""
    k = neighbours.similarity.shape[-1]
    bank = normalize(bank)
    bank_labels = bank_labels.astype(jnp.int32)

    def merge_batch(batch: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        previous, previous_labels, batch_queries = batch
        similarity = jnp.where(bank_valid, batch_queries @ bank.T, -jnp.inf)
        labels = jnp.broadcast_to(bank_labels, similarity.shape)
        similarity = jnp.concatenate([previous, similarity], axis=-1)
        labels = jnp.concatenate([previous_labels, labels], axis=-1)
        similarity, index = jax.lax.top_k(similarity, k)  # equal values: lower index first
        return similarity, jnp.take_along_axis(labels, index, axis=-1)

    similarity, labels = jax.lax.map(
        merge_batch, (neighbours.similarity, neighbours.label, queries))
    valid_labels = jnp.where(bank_valid, bank_labels, -1)
    return Neighbours(
        similarity, labels,
        jnp.maximum(neighbours.max_label, jnp.max(valid_labels, initial=-1)),
        neighbours.unlabelled + jnp.sum(bank_valid & (bank_labels < 0), dtype=jnp.int32),
        neighbours.count + jnp.sum(bank_valid, dtype=jnp.int32))


def predict(neighbours: Neighbours, ks: Sequence[int], temperature: float | jax.Array,
            num_classes: int) -> jax.Array:
    """Predicted classes int32 [len(ks), n, ...] of queries laid out [n, ...]: for each
    k, the class with the largest sum of exp(similarity / temperature) over the k
    nearest rows (the lowest class on a tie). Votes are summed one query batch at
    a time, so [batch, k, classes] is the largest intermediate."""

    def vote(batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        similarity, labels = batch
        weights = jnp.exp(similarity / temperature)  # 0 where no row (-inf)
        one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # 0 where label -1
        return jnp.stack([
            jnp.argmax(jnp.einsum("...k,...kc->...c", weights[..., :k], one_hot[..., :k, :]),
                       axis=-1).astype(jnp.int32)
            for k in ks])

    predictions = jax.lax.map(vote, (neighbours.similarity, neighbours.label))
    return jnp.moveaxis(predictions, 1, 0)


def knn_predictions(bank_features: np.ndarray, bank_labels: np.ndarray,
                    query_features: np.ndarray, *, ks: Sequence[int] = (20, 200),
                    temperature: float = 0.07, batch_size: int = 1024,
                    bank_batch_size: int = 4096) -> np.ndarray:
    """Predicted classes int32 [len(ks), N] of the N queries, the bank streamed in
    chunks of `bank_batch_size` rows and the queries in batches of `batch_size`
    (both only bound memory: the predictions do not depend on them)."""
    ks = _check_ks(ks, "ks")
    if batch_size < 1 or bank_batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} and bank_batch_size={bank_batch_size} "
                          "must be positive")
    num_queries = len(query_features)
    queries, _ = _batched(query_features, batch_size)
    queries = normalize(jnp.asarray(queries))
    neighbours = empty_neighbours(queries.shape[:-1], max(ks))
    bank_labels = np.asarray(bank_labels, np.int32)
    for start in range(0, len(bank_features), bank_batch_size):
        chunk, valid = _padded(bank_features[start:start + bank_batch_size], bank_batch_size)
        labels, _ = _padded(bank_labels[start:start + bank_batch_size], bank_batch_size)
        neighbours = _merge(neighbours, queries, jnp.asarray(chunk), jnp.asarray(labels),
                            jnp.asarray(valid))
    num_classes = int(bank_labels.max(initial=0)) + 1
    predictions = _predict(neighbours, ks, jnp.float32(temperature), num_classes)
    return np.asarray(predictions).reshape(len(ks), -1)[:, :num_queries]


def knn_accuracy(bank_features: np.ndarray, bank_labels: np.ndarray,
                 query_features: np.ndarray, query_labels: np.ndarray, *,
                 ks: Sequence[int] = (20, 200), temperature: float = 0.07,
                 batch_size: int = 1024, bank_batch_size: int = 4096) -> dict[int, float]:
    """Top-1 accuracy of the weighted k-NN classifier for each k in `ks` (a k larger
    than the bank votes with the whole bank)."""
    if (np.asarray(bank_labels) < 0).any() or (np.asarray(query_labels) < 0).any():
        raise DataError("k-NN needs labelled splits for both the memory bank and the queries; "
                        "set config.data.train_split / eval_split to labelled splits or "
                        "--config.evals.knn.enabled=False")
    predictions = knn_predictions(bank_features, bank_labels, query_features, ks=ks,
                                  temperature=temperature, batch_size=batch_size,
                                  bank_batch_size=bank_batch_size)
    correct = (predictions == np.asarray(query_labels)[None]).sum(1)
    return {k: float(c) / len(query_features) for k, c in zip(ks, correct, strict=True)}


_merge = jax.jit(merge, donate_argnums=0)
_predict = jax.jit(predict, static_argnames=("ks", "num_classes"))


def _batched(rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` [N, ...] as [n, batch_size, ...], zero-padded, and its validity [n, batch_size]."""
    rows, valid = _padded(rows, -(-max(len(rows), 1) // batch_size) * batch_size)
    return rows.reshape(-1, batch_size, *rows.shape[1:]), valid.reshape(-1, batch_size)


def _padded(rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(rows)
    padding = np.zeros((size - len(rows), *rows.shape[1:]), rows.dtype)
    return np.concatenate([rows, padding]), np.arange(size) < len(rows)


def _check_ks(ks: Sequence[int], field: str) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ConfigError(f"{field}={ks} must be one or more positive integers")
    return tuple(int(k) for k in ks)


@register("knn", defaults=dict(
    ks=(20, 200),        # neighbours that vote; one top-1 metric per k
    temperature=0.07,    # vote weight exp(similarity / temperature)
))
class KNN(Evaluator):
    """Weighted k-NN top-1 of `config.data.eval_split` (the queries) against
    `config.data.train_split` (the memory bank), both embedded by the method's
    `embed` at the evaluation resolution in batches of `config.eval.batch_size`.

    Metrics `top1_k{k}` for each k of `ks`. The queries and their running
    neighbours stay on the devices, split over the mesh; the bank streams past
    one embedded batch at a time. Skipped (no metrics, one log line) when either
    split has unlabelled images."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.embed import check_labelled_splits  # imports TensorFlow

        super().__init__(name, config, run)
        self.ks = _check_ks(config.ks, f"config.evals.{name}.ks")
        if not config.temperature > 0:
            raise ConfigError(f"config.evals.{name}.temperature={config.temperature!r} "
                              "must be > 0")
        check_labelled_splits(run.config, f"--config.evals.{name}.enabled=False")
        self._skipped = ""  # why k-NN cannot run on this data, once known
        mesh = run.mesh
        batched = NamedSharding(mesh, PartitionSpec(None, sharding.DATA_AXIS))
        scalar = sharding.replicated(mesh)
        self._shardings = Neighbours(batched, batched, scalar, scalar, scalar)
        self._stack = jax.jit(lambda rows: jnp.stack(rows), out_shardings=batched)
        self._normalize = jax.jit(normalize, out_shardings=batched)
        self._empty = jax.jit(empty_neighbours, static_argnums=(0, 1),
                              out_shardings=self._shardings)
        self._merge = jax.jit(merge, donate_argnums=0, out_shardings=self._shardings)
        self._missing = jax.jit(lambda labels, valid: jnp.sum(valid & (labels < 0)),
                                out_shardings=scalar)
        self._correct = jax.jit(_correct, static_argnames=("ks", "num_classes"),
                                out_shardings=scalar)

    def evaluate(self, state: Any) -> dict[str, float]:
        if self._skipped:
            return self._skip(self._skipped)
        data = self.run.config.data
        features, labels, valid = self._embed_queries(state, data.eval_split)
        missing = int(self._missing(labels, valid))
        if missing:
            return self._skip(f"split {data.eval_split!r} has {missing} unlabelled images")
        neighbours = self._empty(tuple(features.shape[:-1]), max(self.ks))
        for index, bank in enumerate(self._batches(state, data.train_split)):
            neighbours = self._merge(neighbours, features, *bank[:3])
            if index == 0 and int(neighbours.unlabelled):  # an unlabelled bank: stop early
                return self._skip(f"split {data.train_split!r} has unlabelled images")
        if int(neighbours.unlabelled):
            return self._skip(f"split {data.train_split!r} has {int(neighbours.unlabelled)} "
                              "unlabelled images")
        correct = self._correct(neighbours, labels, valid, ks=self.ks,
                                temperature=jnp.float32(self.config.temperature),
                                num_classes=int(neighbours.max_label) + 1)
        correct, total = jax.device_get(correct)
        return {f"top1_k{k}": int(c) / int(total) for k, c in zip(self.ks, correct, strict=True)}

    def _skip(self, reason: str) -> dict[str, float]:
        """No metrics, one log line; later calls skip at once (the data stays as it is)."""
        self._skipped = reason
        log.info("k-NN skipped: %s", reason)
        return {}

    def _batches(self, state: Any, split: str) -> Iterator[tuple[jax.Array, ...]]:
        from sslx.evaluators.embed import embedded_batches

        return embedded_batches(self.run.method, state.params, state.method_state,
                                self.run.config, split, self.run.mesh)

    def _embed_queries(self, state: Any, split: str) -> tuple[jax.Array, ...]:
        """Unit features [n, B, D], labels and validity [n, B] of `split`, B split over
        the mesh (each device keeps its share of every batch)."""
        batches = list(self._batches(state, split))
        features, labels, valid = (self._stack([batch[i] for batch in batches])
                                   for i in range(3))
        del batches
        return self._normalize(features), labels, valid


def _correct(neighbours: Neighbours, labels: jax.Array, valid: jax.Array, *,
             ks: tuple[int, ...], temperature: jax.Array,
             num_classes: int) -> tuple[jax.Array, jax.Array]:
    """Correct predictions per k [len(ks)] and the number of queries."""
    predictions = predict(neighbours, ks, temperature, num_classes)
    correct = jnp.sum((predictions == labels) & valid, axis=(1, 2), dtype=jnp.int32)
    return correct, jnp.sum(valid, dtype=jnp.int32)
