"""Embeddings written as numpy arrays, with a JSON note of what produced them."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from sslx.checkpoint import describe


def write_embeddings(directory: str, split: str, features: np.ndarray, labels: np.ndarray,
                     config: ml_collections.ConfigDict, step: int) -> dict[str, str]:
    """Writes `<split>_features.npy` (float32 [N, D]), `<split>_labels.npy` (int32 [N],
    only where the split is labelled) and `<split>_info.json`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = {"features": os.path.join(directory, f"{split}_features.npy")}
    np.save(paths["features"], features.astype(np.float32))
    if (labels >= 0).all():
        paths["labels"] = os.path.join(directory, f"{split}_labels.npy")
        np.save(paths["labels"], labels.astype(np.int32))
    paths["info"] = os.path.join(directory, f"{split}_info.json")
    with open(paths["info"], "w") as f:
        json.dump({**describe(config), "step": step, "split": split,
                   "num_examples": len(features), "feature_dim": int(features.shape[1]),
                   "data": config.data.to_dict()}, f, indent=2)
    return paths
