"""Embeddings written as numpy arrays, with a JSON note of what produced them."""

from __future__ import annotations

import ml_collections
import numpy as np

from sslx import fs
from sslx.checkpoint import describe


def write_embeddings(directory: str, split: str, features: np.ndarray, labels: np.ndarray,
                     config: ml_collections.ConfigDict, step: int) -> dict[str, str]:
    """Writes `<split>_features.npy` (float32 [N, D]), `<split>_labels.npy` (int32 [N],
    only where the split is labelled) and `<split>_info.json` into `directory` (local
    or remote); returns their paths."""
    fs.makedirs(directory)
    paths = {"features": fs.join(directory, f"{split}_features.npy")}
    fs.save_npy(paths["features"], features.astype(np.float32))
    if (labels >= 0).all():
        paths["labels"] = fs.join(directory, f"{split}_labels.npy")
        fs.save_npy(paths["labels"], labels.astype(np.int32))
    paths["info"] = fs.join(directory, f"{split}_info.json")
    fs.write_json(paths["info"], {
        **describe(config), "step": step, "split": split, "num_examples": len(features),
        "feature_dim": int(features.shape[1]), "data": config.data.to_dict()})
    return paths
