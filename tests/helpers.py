"""Tiny configs and data shared by the tests."""

from __future__ import annotations

import os

import numpy as np

from sslx import config_defaults
from sslx.config_defaults import FASHION_MNIST_IDX_DIR
from sslx.data import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_fmnist_npz(path: str, train: int = 256, test: int = 128) -> str:
    """A few Fashion-MNIST images as an `arrays` source (.npz), for fast end-to-end runs."""
    cfg = config_defaults.base_config()
    cfg.data.path = FASHION_MNIST_IDX_DIR
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        source = sources.load_split(cfg.data, split, process_index=0, process_count=1)
        examples = list(source.dataset.take(count).as_numpy_iterator())
        arrays[f"{split}_images"] = np.stack([e["image"][..., 0] for e in examples])
        arrays[f"{split}_labels"] = np.array([e["label"] for e in examples], np.int32)
    np.savez(path, **arrays)
    return path


def tiny_config(path: str = "configs/simclr_resnet50.py", npz: str | None = None,
                **overrides):
    """A recipe from configs/ shrunk to seconds: <=16 px views, width-8 ResNet, 2 steps;
    `overrides` are dotted keys, e.g. `**{"optim.base_lr": 0.1}`."""
    config = load_config(path, "runlocal")
    config.unlock()
    for group in config.views.values():
        group.size = min(group.size, 16)
    config.model.width = 8
    config.train.batch_size = 16
    config.train.steps = 2
    config.train.log_every = 1
    config.optim.warmup_epochs = 0.0
    config.checkpoint.every_steps = 1
    config.eval.batch_size = 64
    config.eval.knn_k = (5,)
    if npz:
        config.data.source = "arrays"
        config.data.path = npz
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = value
    config.lock()
    return config


def load_config(relative_path: str, arg: str | None = None):
    """`get_config(arg)` of a config file, as `--config=path:arg` would load it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sslx_test_config",
                                                  os.path.join(REPO, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
