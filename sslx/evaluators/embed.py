"""Backbone embeddings of a split, computed sharded over the mesh, batch by batch."""

from __future__ import annotations

import functools
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
                     mesh: Mesh) -> Iterator[tuple[jax.Array, jax.Array, jax.Array]]:
    """One pass over `split` in batches of `config.eval.batch_size` (global): features
    float32 [B, D], labels int32 [B] (-1 where unlabelled) and validity bool [B]
    (False on the padding of the last batch), as global arrays split over the mesh.
    Every host runs the same number of batches."""
    embed = _embed_fn(method, mesh)
    for batch in pipeline.eval_iterator(config, split, batch_size=config.eval.batch_size,
                                        size=eval_image_size(method.spec)):
        images = sharding.global_batch(batch["image"], mesh)
        extras = sharding.global_batch({"label": batch["label"].astype(np.int32),
                                        "valid": batch["valid"]}, mesh)
        yield embed(params, method_state, images), extras["label"], extras["valid"]


def embed_split(method: Method, params: Any, method_state: Any,
                config: ml_collections.ConfigDict, split: str,
                mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 [N, D] and labels int32 [N] (-1 where unlabeled) of `split`.

    Every host gets the full arrays (hosts' shards are concatenated), so process 0
    can write them: for export. Evaluators use `embedded_batches`, which keeps the
    split on the devices."""
    features, labels = [], []
    for outputs, label, valid in embedded_batches(method, params, method_state, config, split,
                                                  mesh):
        outputs, label, valid = multihost_utils.process_allgather((outputs, label, valid),
                                                                  tiled=True)
        valid = np.asarray(valid, bool)
        features.append(np.asarray(outputs, np.float32)[valid])
        labels.append(np.asarray(label, np.int32)[valid])
    return np.concatenate(features), np.concatenate(labels)
