"""Guards that stop a run with a message naming the cause: a loss that became
non-finite, IDX files that are cut short or do not pair up, a host left without
training examples, unreadable image files (or their skipping), arrays with other
channel counts than 1 or 3, images smaller than the views."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_config

from sslx import config_checks, config_defaults, train
from sslx.data import pipeline, sources
from sslx.data.spec import input_spec
from sslx.errors import ConfigError, DataError


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


# ---------------------------------------------------------------- unreadable, odd or small images


def _image_folder(root, good: int = 3, bad: bool = True):
    """root/train/cat/ with `good` JPEGs and, if `bad`, a truncated JPEG and a text
    file named .jpg; returns the bad paths."""
    cat = root / "train" / "cat"
    cat.mkdir(parents=True)
    jpeg = tf.io.encode_jpeg(np.full([12, 10, 3], 90, np.uint8)).numpy()
    for i in range(good):
        (cat / f"good{i}.jpg").write_bytes(jpeg)
    if not bad:
        return []
    (cat / "cut.jpg").write_bytes(jpeg[:len(jpeg) * 2 // 3])
    (cat / "notes.jpg").write_text("not an image, whatever the extension says")
    return [str(cat / "cut.jpg"), str(cat / "notes.jpg")]


def _folder_config(root, **fields):
    config = config_defaults.base_config().data
    config.source, config.path = "folder", str(root)
    config.update(fields)
    return config


def test_bad_image_files_fail_by_default_naming_the_path(tmp_path):
    bad = _image_folder(tmp_path)
    with pytest.raises(DataError, match=rf"({'|'.join(bad)}) (is truncated|is not a readable)"
                                        r".*1 more of the 5 files.*bad_images='skip'"):
        sources.load_split(_folder_config(tmp_path), "train", process_index=0, process_count=1)


def test_bad_image_files_are_skipped_counted_and_logged(tmp_path, caplog):
    bad = _image_folder(tmp_path)
    config = _folder_config(tmp_path, bad_images="skip")
    with caplog.at_level("WARNING", logger="sslx"):
        assert sources.num_examples(config, "train") == 3  # steps per epoch agree with the reads
        source = sources.load_split(config, "train", process_index=0, process_count=1)
        shards = [sources.load_split(config, "train", process_index=i, process_count=2)
                  for i in range(2)]
    assert (source.num_examples, source.num_local) == (3, 3)
    images = [e["image"] for e in source.dataset.as_numpy_iterator()]
    assert len(images) == 3 and all(image.shape == (12, 10, 3) for image in images)
    assert [s.num_local for s in shards] == [1, 2] and {s.num_examples for s in shards} == {3}
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "skipping 2 of 5 image files" in warning and all(path in warning for path in bad)
    # Training batches come from the good files only (a bad one would stop tf.data).
    run_config = config_defaults.base_config()
    run_config.data = config
    run_config.data.image_size, run_config.views.global_crops.size = 10, 8
    run_config.train.batch_size = 3
    batches = pipeline.train_iterator(run_config, input_spec(run_config), inputs=("views",),
                                      process_index=0, process_count=1)
    assert [view.shape for view in next(batches)["views"]] == [(3, 8, 8, 3)] * 2


def test_folder_of_only_bad_files_is_an_empty_split_in_skip_mode(tmp_path):
    _image_folder(tmp_path, good=0)
    config = _folder_config(tmp_path, bad_images="skip")
    with pytest.raises(DataError, match=r"split 'train' of image folder .* is empty: all 2 of "
                                        r"its image files are unreadable"):
        sources.num_examples(config, "train")


def test_misspelt_bad_images_choice_is_refused(tmp_path):
    _image_folder(tmp_path, bad=False)
    with pytest.raises(ConfigError, match=r"bad_images='skipp'.*did you mean: skip"):
        sources.num_examples(_folder_config(tmp_path, bad_images="skipp"), "train")


@pytest.mark.parametrize("shape, fix", [
    ([4, 8, 8, 4], r"images\[\.\.\., :3\]"),
    ([4, 8, 8, 2], r"images\[\.\.\., :1\]"),
    ([4, 3, 8, 8], r"transpose\(0, 2, 3, 1\)"),
])
def test_arrays_with_other_channel_counts_are_refused(tmp_path, shape, fix):
    path = tmp_path / "odd.npz"
    np.savez(path, train_images=np.zeros(shape, np.uint8))
    config = _folder_config(path, source="arrays", image_size=8)
    message = rf"images of {path}:train are \[{', '.join(map(str, shape))}\].*channels.*{fix}"
    with pytest.raises(DataError, match=message):
        sources.num_examples(config, "train")
    with pytest.raises(DataError, match=message):
        sources.load_split(config, "train", process_index=0, process_count=1)
    with pytest.raises(DataError, match=r"images of from_arrays .*channels"):
        sources.from_arrays(np.zeros(shape, np.uint8), process_index=0, process_count=1)


def test_idx_images_with_channels(tmp_path):
    """IDX images [N, H, W, C] load as RGB for C = 3 and are refused naming the file
    otherwise."""
    images = tmp_path / "train-images-idx3-ubyte.gz"
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros([2]))
    _idx(images, np.full([2, 28, 28, 3], 7))
    source = _load_idx_train(tmp_path)
    assert source.dataset.element_spec["image"].shape == (28, 28, 3)
    _idx(images, np.zeros([2, 28, 28, 4]))
    with pytest.raises(DataError, match=rf"images of {images} are \[2, 28, 28, 4\].*:3\]"):
        _load_idx_train(tmp_path)


def test_images_smaller_than_the_nominal_side_are_refused(tmp_path):
    path = tmp_path / "small.npz"
    np.savez(path, train_images=np.zeros([4, 8, 8], np.uint8),
             test_images=np.zeros([4, 8, 8], np.uint8))
    config = _folder_config(path, source="arrays")  # image_size 28
    with pytest.raises(DataError, match=r"8x8 px, more than 2x smaller than "
                                        r"config.data.image_size=28.*image_size=8"):
        sources.load_split(config, "train", process_index=0, process_count=1)
    # Evaluation resizes whatever it embeds: only the training images must be this large.
    assert sources.load_split(config, "test", process_index=0, process_count=1).num_local == 4
    run_config = config_defaults.base_config()
    run_config.views.global_crops.size = 224
    with pytest.raises(ConfigError, match=r"views.global_crops.size=224 is larger than the "
                                          r"images \(config.data.image_size=28\).*at most 28"):
        config_checks.check_run(run_config, num_devices=1, process_count=1)
