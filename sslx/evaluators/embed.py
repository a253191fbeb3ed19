"""Backbone embeddings of a whole split, computed sharded over the mesh."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from sslx import sharding
from sslx.data import pipeline
from sslx.data.spec import InputSpec
from sslx.methods.base import Method


def eval_image_size(spec: InputSpec) -> int:
    """The side images are embedded at: the run's `spec.eval_size`, the resolution
    of its first (largest) training view."""
    return spec.eval_size


def embed_split(method: Method, params: Any, method_state: Any,
                config: ml_collections.ConfigDict, split: str,
                mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 [N, D] and labels int32 [N] (-1 where unlabeled) of `split`.

    Every host gets the full arrays (hosts' shards are concatenated), so each can
    run the k-NN and process 0 can write them."""
    data_sharding = sharding.data_sharding(mesh)
    embed = jax.jit(method.embed, out_shardings=data_sharding)
    features, labels = [], []
    for batch in pipeline.eval_iterator(config, split, batch_size=config.eval.batch_size,
                                        size=eval_image_size(method.spec)):
        images = sharding.global_batch(batch["image"], mesh)
        outputs = embed(params, method_state, images)
        extras = sharding.global_batch({"label": batch["label"], "valid": batch["valid"]}, mesh)
        outputs, extras = multihost_utils.process_allgather((outputs, extras), tiled=True)
        valid = np.asarray(extras["valid"], bool)
        features.append(np.asarray(outputs, np.float32)[valid])
        labels.append(np.asarray(extras["label"], np.int32)[valid])
    return np.concatenate(features), np.concatenate(labels)
