"""Guards that stop a run with a message naming the cause: a loss that became
non-finite, IDX files that are cut short or do not pair up, a host left without
training examples."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from helpers import tiny_config

from sslx import config_defaults, train
from sslx.data import pipeline, sources
from sslx.data.spec import input_spec
from sslx.errors import DataError


def test_huge_learning_rate_stops_at_the_step_that_went_non_finite(npz, tmp_path):
    # Step 2 is a checkpoint step but not a log step: it is checked all the same, and
    # the non-finite state is not saved over the last good one.
    config = tiny_config(npz=npz, **{"optim.base_lr": 1e30, "evals.knn.enabled": False,
                                     "train.steps": 3, "train.log_every": 100})
    with pytest.raises(FloatingPointError, match=r"non-finite at step 2\b.*base_lr"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "1").is_dir() and not (checkpoints / "2").exists()


def _idx(path, array: np.ndarray, *, dims: tuple[int, ...] | None = None,
         drop: int = 0) -> None:
    """An IDX file of `array`, its header claiming `dims` (default: the array's shape),
    its last `drop` bytes cut off."""
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, 8, len(dims)]) + np.asarray(dims, ">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(data[:len(data) - drop])


def _load_idx_train(directory):
    config = config_defaults.base_config().data
    config.path = str(directory)
    return sources.load_split(config, "train", process_index=0, process_count=1)


def test_truncated_idx_images_are_named(tmp_path):
    images = tmp_path / "train-images-idx3-ubyte.gz"
    _idx(images, np.zeros([5, 4, 4]), drop=10)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros([5]))
    with pytest.raises(DataError, match=f"{images} is truncated"):
        _load_idx_train(tmp_path)


def test_truncated_idx_labels_are_named(tmp_path):
    _idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros([5, 4, 4]))
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    _idx(labels, np.zeros([3]), dims=(5,))  # header says 5, the file holds 3
    with pytest.raises(DataError, match=f"{labels} is truncated"):
        _load_idx_train(tmp_path)


def test_idx_image_and_label_counts_must_match(tmp_path):
    images = tmp_path / "train-images-idx3-ubyte.gz"
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    _idx(images, np.zeros([5, 4, 4]))
    _idx(labels, np.zeros([4]))
    with pytest.raises(DataError, match=f"{images} .*5, 4, 4.* and {labels} .*4.* do not pair"):
        _load_idx_train(tmp_path)


def test_host_without_training_examples_is_told_so(tmp_path):
    """3 examples over 4 hosts: host 0's shard is empty (shards are [0:0], [0:1], ...)."""
    path = tmp_path / "three.npz"
    np.savez(path, train_images=np.zeros([3, 8, 8], np.uint8), train_labels=np.arange(3))
    config = config_defaults.base_config()
    config.data.source, config.data.path, config.data.image_size = "arrays", str(path), 8
    config.views.global_crops.size = 8
    config.train.batch_size = 4
    with pytest.raises(DataError, match=r"host 0 of 4 got no training examples.*only 3"):
        pipeline.train_iterator(config, input_spec(config), inputs=("views", "label"),
                                process_index=0, process_count=4)
