"""Backbone embeddings of a split, computed sharded over the mesh, batch by batch."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from sslx import sharding
from sslx.data import pipeline, sources
from sslx.data.spec import InputSpec
from sslx.errors import DataError
from sslx.methods.base import Method

log = logging.getLogger("sslx")


def eval_image_size(spec: InputSpec) -> int:
    """The side images are embedded at: the run's `spec.eval_size`, the resolution
    of its first (largest) training view."""
    return spec.eval_size


def check_split(config: ml_collections.ConfigDict, split: str, where: str,
                switch: str = "") -> None:
    """`DataError` naming `split`, the field that chose it (`where`) and, if given, the
    `switch` that turns off what reads it; reads no images, compiles nothing."""
    try:
        sources.num_examples(config.data, split)
    except DataError as error:
        raise DataError(f"{error} (set {where} to one of them"
                        f"{' or ' + switch if switch else ''})") from None


@functools.lru_cache(maxsize=16)
def _embed_fn(method: Method, mesh: Mesh):
    """`method.embed`, jitted once per method and mesh (evaluators and export share it)."""
    return jax.jit(method.embed, out_shardings=sharding.data_sharding(mesh))


def embedded_batches(method: Method, params: Any, method_state: Any,
                     config: ml_collections.ConfigDict, split: str,
                     mesh: Mesh) -> Iterator[tuple[jax.Array, ...]]:
    """One pass over `split` in batches of `config.eval.batch_size` (global): features
    float32 [B, D], labels int32 [B] (-1 where unlabelled), validity bool [B]
    (False on the padding of the last batch) and the normalised images embedded
    [B, S, S, 3], as global arrays split over the mesh. Every host runs the same
    number of batches."""
    embed = _embed_fn(method, mesh)
    for images, labels, valid in eval_batches(config, split, method.spec, mesh):
        yield embed(params, method_state, images), labels, valid, images


def eval_batches(config: ml_collections.ConfigDict, split: str, spec: InputSpec,
                 mesh: Mesh) -> Iterator[tuple[jax.Array, jax.Array, jax.Array]]:
    """One pass over `split` in global batches of `config.eval.batch_size`, split over
    the mesh: normalised images [B, S, S, 3] at `eval_image_size`, labels int32 [B]
    (-1 where unlabelled), validity bool [B] (False on the last batch's padding)."""
    for batch in pipeline.eval_iterator(config, split, batch_size=config.eval.batch_size,
                                        size=eval_image_size(spec)):
        images = sharding.global_batch(batch["image"], mesh)
        extras = sharding.global_batch({"label": batch["label"].astype(np.int32),
                                        "valid": batch["valid"]}, mesh)
        yield images, extras["label"], extras["valid"]


def host_batches(method: Method, params: Any, method_state: Any,
                 config: ml_collections.ConfigDict, split: str, mesh: Mesh, *,
                 source: sources.Source | None = None, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This host's shard of `split`, embedded batch by batch: features float32 [b, D]
    and labels int32 [b] (-1 where unlabelled) of its valid rows, in the shard's order.

    Nothing crosses hosts, so a host holds one batch at a time (export streams these
    to disk); every host still runs the same number of batches, as the jitted embed
    of the global batch needs. `source` (this host's, e.g. to read its
    `num_classes` first) and the process index/count (to simulate hosts) are
    passed to `pipeline.eval_iterator`."""
    embed = _embed_fn(method, mesh)
    for batch in pipeline.eval_iterator(config, split, batch_size=config.eval.batch_size,
                                        size=eval_image_size(method.spec), source=source,
                                        process_index=process_index,
                                        process_count=process_count):
        features = embed(params, method_state, sharding.global_batch(batch["image"], mesh))
        valid = np.asarray(batch["valid"], bool)
        yield host_rows(features)[valid], np.asarray(batch["label"], np.int32)[valid]


def host_rows(array: jax.Array) -> np.ndarray:
    """The rows of a global array, split over its first axis, that this host holds,
    in order: for an array made by `sharding.global_batch`, what this host gave it.
    Rows held by several of its devices (replicas over other mesh axes) count once."""
    pieces: dict[int, Any] = {}
    for shard in array.addressable_shards:
        pieces.setdefault(shard.index[0].start or 0, shard.data)
    return np.concatenate([np.asarray(pieces[start]) for start in sorted(pieces)])


def embed_split(method: Method, params: Any, method_state: Any,
                config: ml_collections.ConfigDict, split: str, mesh: Mesh,
                max_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 [N, D] and labels int32 [N] (-1 where unlabeled) of `split`,
    or of its first batches holding `max_examples` images.

    Every host gets the full arrays (hosts' shards are concatenated), so host-side
    fits see every row (the linear probe). The k-NN evaluator uses
    `embedded_batches`, which keeps the split on the devices; export uses
    `host_batches`, which keeps each host to its own shard."""
    features, labels, _ = _gathered(method, params, method_state, config, split, mesh,
                                    max_examples, with_images=False)
    return features, labels


def embed_examples(method: Method, params: Any, method_state: Any,
                   config: ml_collections.ConfigDict, split: str, mesh: Mesh,
                   max_examples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`embed_split` of the first `max_examples` images of `split`, and those images as
    the network saw them, uint8 [N, S, S, 3] (for pictures)."""
    features, labels, images = _gathered(method, params, method_state, config, split, mesh,
                                         max_examples, with_images=True)
    return features, labels, uint8_images(images, config.data)


def uint8_images(images: np.ndarray, data: ml_collections.ConfigDict) -> np.ndarray:
    """Normalised images as the pixels they were: times `data.std`, plus `data.mean`,
    as uint8 (the inverse of `normalized_images`, up to rounding)."""
    pixels = np.asarray(images) * np.asarray(data.std) + np.asarray(data.mean)
    return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)


def normalized_images(images: np.ndarray, data: ml_collections.ConfigDict) -> np.ndarray:
    """uint8 images (as `embed_examples` returns them) as the network takes them:
    float32 in [0, 1], minus `data.mean`, over `data.std`."""
    return ((images / np.float32(255) - np.asarray(data.mean, np.float32)) /
            np.asarray(data.std, np.float32))


def _gathered(method: Method, params: Any, method_state: Any,
              config: ml_collections.ConfigDict, split: str, mesh: Mesh,
              max_examples: int | None, with_images: bool) -> tuple[np.ndarray, ...]:
    """Features, labels and (`with_images`) normalised images of `split`'s first
    `max_examples` (None: all) valid rows, gathered from every host."""
    dtypes = (np.float32, np.int32, np.float32)[:3 if with_images else 2]
    gathered: list[list[np.ndarray]] = [[] for _ in dtypes]
    count = 0
    for outputs, label, valid, images in embedded_batches(method, params, method_state, config,
                                                          split, mesh):
        wanted = (outputs, label, images)[:len(dtypes)]
        wanted, valid = multihost_utils.process_allgather((wanted, valid), tiled=True)
        valid = np.asarray(valid, bool)
        for kept, array, dtype in zip(gathered, wanted, dtypes, strict=True):
            kept.append(np.asarray(array, dtype)[valid])
        count += int(valid.sum())
        if max_examples is not None and count >= max_examples:
            break
    arrays = [np.concatenate(kept)[:max_examples] for kept in gathered]
    return (*arrays, None) if not with_images else tuple(arrays)


def split_features(run: Any, state: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`embed_split` of the whole `split` by `state`, computed once per train step and
    kept in `run.features`, so the evaluators that fit on host-side features (the
    linear probe, low-label evaluation) embed each split once between them."""
    key = (int(state.step), split)
    if key not in run.features:
        run.features = {k: v for k, v in run.features.items() if k[0] == key[0]}
        run.features[key] = embed_split(run.method, state.params, state.method_state,
                                        run.config, split, run.mesh)
    return run.features[key]


def check_labelled_splits(config: ml_collections.ConfigDict, switch: str) -> None:
    """`check_split` of the train and eval splits a labelled evaluator reads."""
    check_split(config, config.data.eval_split, "config.data.eval_split", switch)
    check_split(config, config.data.train_split, "config.data.train_split", switch)


def labelled_features(run: Any, state: Any, name: str
                      ) -> tuple[tuple[np.ndarray, np.ndarray], ...] | None:
    """`split_features` of the run's train and eval splits, or None, with one log line
    naming evaluator `name` and the split, where either has unlabelled images."""
    data = run.config.data
    splits = tuple(split_features(run, state, split)
                   for split in (data.train_split, data.eval_split))
    for split, (_, labels) in zip((data.train_split, data.eval_split), splits, strict=True):
        missing = int((labels < 0).sum())
        if missing:
            log.info("%s skipped: split %r has %d unlabelled images", name, split, missing)
            return None
    return splits
