"""Sources: IDX (the real Fashion-MNIST files), image folders, npz/in-memory arrays
and TFDS (mocked, offline); per-host shards; the errors users can act on."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_sample_images

from sslx import config_defaults
from sslx.data import augment, sources
from sslx.errors import DataError

FASHION_MNIST = config_defaults.FASHION_MNIST_IDX_DIR
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST), reason="apt-get install dataset-fashion-mnist"
)


def _data_config(source: str, path: str, **overrides):
    config = config_defaults.base_config().data
    config.source, config.path = source, str(path)
    config.update(overrides)
    return config


def _elements(source: sources.Source) -> list[dict[str, np.ndarray]]:
    return list(source.dataset.as_numpy_iterator())


def _check_format(source: sources.Source) -> None:
    spec = source.dataset.element_spec
    assert spec["image"].dtype == tf.uint8 and spec["image"].shape[-1] == 3
    assert spec["label"].dtype == tf.int32 and spec["label"].shape == ()


# ---------------------------------------------------------------- IDX


@needs_fashion_mnist
def test_idx_fashion_mnist():
    config = _data_config("idx", FASHION_MNIST)
    assert sources.num_examples(config, "train") == 60000
    assert sources.num_examples(config, "test") == 10000
    test = sources.load_split(config, "test", process_index=0, process_count=1)
    assert (test.num_examples, test.num_local, test.num_classes) == (10000, 10000, 10)
    _check_format(test)
    batch = test.dataset.batch(10000).get_single_element()
    assert batch["image"].shape == (10000, 28, 28, 3)
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])  # gray, tiled
    labels = batch["label"].numpy()
    assert labels.min() == 0 and labels.max() == 9 and np.bincount(labels).tolist() == [1000] * 10


@needs_fashion_mnist
def test_idx_shards_partition_the_split():
    config = _data_config("idx", FASHION_MNIST)
    shards = [sources.load_split(config, "test", process_index=i, process_count=4)
              for i in range(4)]
    assert [s.num_local for s in shards] == [2500] * 4
    first = [s.dataset.take(1).get_single_element()["image"].numpy() for s in shards]
    assert not np.array_equal(first[0], first[1])


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_errors(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'}.*apt-get install"):
        sources.load_split(_data_config("idx", tmp_path / "missing"), "train", process_index=0,
                           process_count=1)
    config = _data_config("idx", tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte"):
        sources.num_examples(config, "train")
    with pytest.raises(DataError, match=r"no split 'validation'.*test, train"):
        sources.num_examples(config, "validation")
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros([0, 4, 4]))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros([0]))
    with pytest.raises(DataError, match=r"'train' .* is empty"):
        sources.load_split(config, "train", process_index=0, process_count=1)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file")
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros([3]))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is not a uint8 IDX file"):
        sources.load_split(config, "test", process_index=0, process_count=1)


# ---------------------------------------------------------------- image folder


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Six small RGB crops of sklearn's two sample photos."""
    small = [tf.image.resize(p, [24, 36], antialias=True) for p in load_sample_images().images]
    crops = [p[i:i + 20, i:i + 30] for p in small for i in (0, 2, 4)]
    return [tf.cast(c, tf.uint8).numpy() for c in crops]


def _write(path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    encode = tf.io.encode_png if path.suffix == ".png" else tf.io.encode_jpeg
    path.write_bytes(encode(image).numpy())


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos):
    """train/{china,flower}/ (JPEG, PNG, one grayscale PNG), val/ with one class,
    unlabeled/ flat."""
    root = tmp_path_factory.mktemp("folder")
    for i, photo in enumerate(photos):
        cls = "china" if i < 3 else "flower"
        _write(root / "train" / cls / f"{i}.{'png' if i % 2 else 'jpg'}", photo)
        _write(root / "unlabeled" / f"{i}.jpeg", photo)
    _write(root / "train" / "flower" / "gray.png", photos[0][..., :1])
    _write(root / "val" / "flower" / "a.jpg", photos[4])
    (root / "train" / "notes.txt").write_text("not an image, ignored")
    return root


def test_folder_labelled(folder):
    config = _data_config("folder", folder)
    assert sources.num_examples(config, "train") == 7
    source = sources.load_split(config, "train", process_index=0, process_count=1)
    assert (source.num_examples, source.num_local, source.num_classes) == (7, 7, 2)
    _check_format(source)
    elements = _elements(source)
    assert sorted(e["label"] for e in elements) == [0, 0, 0, 1, 1, 1, 1]
    assert all(e["image"].shape == (20, 30, 3) for e in elements)
    gray = [e["image"] for e in elements if np.array_equal(e["image"][..., 0], e["image"][..., 1])]
    assert len(gray) == 1 and np.array_equal(gray[0][..., 1], gray[0][..., 2])


def test_folder_val_uses_train_class_ids(folder):
    source = sources.load_split(_data_config("folder", folder), "val", process_index=0,
                                process_count=1)
    assert source.num_classes == 2 and [e["label"] for e in _elements(source)] == [1]


def test_folder_flat_is_unlabelled(folder, photos):
    source = sources.load_split(_data_config("folder", folder), "unlabeled", process_index=0,
                                process_count=1)
    elements = _elements(source)
    assert source.num_classes is None and [e["label"] for e in elements] == [-1] * 6
    # JPEG is lossy: each decoded image is close to one of the photos.
    for e in elements:
        assert min(np.abs(e["image"].astype(int) - p).mean() for p in photos) < 8


CLASS_VALUES = {"ant": 40, "bee": 120, "cat": 200}  # the pixel value of each class's images


@pytest.fixture(scope="module")
def coded_folder(tmp_path_factory):
    """train/{ant,bee,cat}/ and val/cat/ whose images are filled with their class's value
    (JPEG and PNG alternately; flat colours survive JPEG within a few levels)."""
    root = tmp_path_factory.mktemp("coded")
    for name, value in CLASS_VALUES.items():
        for i in range(4):
            image = np.full([6 + i, 9, 3], value, np.uint8)
            _write(root / "train" / name / f"{i}.{'png' if i % 2 else 'jpg'}", image)
    _write(root / "val" / "cat" / "0.jpg", np.full([5, 5, 3], CLASS_VALUES["cat"], np.uint8))
    return root


def _check_labels_follow_pixels(elements) -> None:
    ids = {value: i for i, value in enumerate(CLASS_VALUES.values())}  # sorted class names
    for e in elements:
        value = int(np.round(e["image"].mean()))
        assert np.abs(e["image"].astype(int) - value).max() <= 3
        [class_value] = [v for v in ids if abs(v - value) <= 3]
        assert e["label"] == ids[class_value], (e["label"], value)


def test_folder_label_of_each_image_is_its_class_folder(coded_folder):
    """Each decoded image carries the label of the folder it was read from, also in
    every host's shard (a shuffle of the paths without their labels fails)."""
    config = _data_config("folder", coded_folder)
    source = sources.load_split(config, "train", process_index=0, process_count=1)
    elements = _elements(source)
    assert len(elements) == 12 and source.num_classes == 3
    _check_labels_follow_pixels(elements)
    assert [e["label"] for e in elements] != sorted(e["label"] for e in elements)  # mixed order
    for i in range(3):
        shard = sources.load_split(config, "train", process_index=i, process_count=3)
        _check_labels_follow_pixels(_elements(shard))
    val = _elements(sources.load_split(config, "val", process_index=0, process_count=1))
    assert [e["label"] for e in val] == [2]
    _check_labels_follow_pixels(val)


def test_folder_errors(tmp_path, photos):
    with pytest.raises(DataError, match=f"image folder {tmp_path / 'nope'} does not exist"):
        sources.num_examples(_data_config("folder", tmp_path / "nope"), "train")
    config = _data_config("folder", tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"no split 'tran' .*did you mean: train.*empty, train"):
        sources.num_examples(config, "tran")
    with pytest.raises(DataError, match=r"split 'empty' .* is empty"):
        sources.load_split(config, "empty", process_index=0, process_count=1)
    _write(tmp_path / "train" / "cat" / "good.jpg", photos[0])
    bad = tmp_path / "train" / "cat" / "bad.jpg"
    bad.write_bytes(b"this is no jpeg")
    with pytest.raises(DataError, match=f"{bad} is not a readable JPEG or PNG"):
        sources.load_split(config, "train", process_index=0, process_count=1)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_is_named_before_training(tmp_path, photos, suffix):
    """A file cut short (an interrupted copy) fails when the split is loaded, with a
    DataError naming it, not as a TensorFlow error mid-training."""
    good = tmp_path / "train" / "cat" / f"good{suffix}"
    _write(good, photos[0])
    cut = good.with_name(f"cut{suffix}")
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) * 2 // 3])
    config = _data_config("folder", tmp_path)
    with pytest.raises(DataError, match=f"{cut} is truncated or corrupt"):
        sources.load_split(config, "train", process_index=0, process_count=1)
    # The same file cut just before its end marker is refused too.
    cut.write_bytes(good.read_bytes()[:-2])
    with pytest.raises(DataError, match=f"{cut} is truncated"):
        sources.load_split(config, "train", process_index=0, process_count=1)


def test_data_after_the_image_end_is_accepted(tmp_path, photos):
    """Bytes appended after a JPEG's end marker (motion photos, padding) decode fine,
    so the check lets them through."""
    path = tmp_path / "train" / "cat" / "padded.jpg"
    _write(path, photos[1])
    path.write_bytes(path.read_bytes() + b"\0" * 100 + b"trailer")
    source = sources.load_split(_data_config("folder", tmp_path), "train", process_index=0,
                                process_count=1)
    [element] = _elements(source)
    assert element["image"].shape == (20, 30, 3)
    assert np.abs(element["image"].astype(int) - photos[1]).mean() < 8


# ---------------------------------------------------------------- arrays


def test_arrays_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 256, [10, 8, 8], np.uint8),
        train_labels=np.arange(10) % 3,
        test_images=rng.integers(0, 256, [4, 8, 8, 3], np.uint8),
    )
    config = _data_config("arrays", path, image_size=8)
    assert sources.num_examples(config, "train") == 10
    train = sources.load_split(config, "train", process_index=0, process_count=1)
    _check_format(train)
    assert train.num_classes == 3 and train.in_memory
    assert [e["label"] for e in _elements(train)] == (np.arange(10) % 3).tolist()
    test = sources.load_split(config, "test", process_index=0, process_count=1)
    assert test.num_classes is None and [e["label"] for e in _elements(test)] == [-1] * 4
    with pytest.raises(DataError, match=r"no split 'validation'.*test, train"):
        sources.num_examples(config, "validation")
    with pytest.raises(DataError, match=f"arrays file {tmp_path / 'x.npz'} does not exist"):
        sources.num_examples(_data_config("arrays", tmp_path / "x.npz"), "train")
    np.savez(tmp_path / "empty.npz", train_images=np.zeros([0, 8, 8], np.uint8))
    with pytest.raises(DataError, match=r"split 'train' .* is empty"):
        sources.num_examples(_data_config("arrays", tmp_path / "empty.npz"), "train")


def test_from_arrays():
    images = np.zeros([5, 6, 6], np.uint8)
    source = sources.from_arrays(images, process_index=0, process_count=1)
    _check_format(source)
    assert source.num_classes is None and _elements(source)[0]["image"].shape == (6, 6, 3)
    with pytest.raises(DataError, match=r"float32 .*expected uint8"):
        sources.from_arrays(images.astype(np.float32), process_index=0, process_count=1)
    with pytest.raises(DataError, match=r"labels of from_arrays"):
        sources.from_arrays(images, np.zeros(4, int), process_index=0, process_count=1)


def test_process_defaults_come_from_jax():
    source = sources.from_arrays(np.zeros([3, 2, 2], np.uint8))
    assert (source.process_index, source.process_count) == (0, 1)


# ---------------------------------------------------------------- per-host shards


@pytest.mark.parametrize("kind", ["arrays", "folder"])
def test_shards_are_disjoint_and_cover(kind, folder):
    """Four hosts: every example exactly once, shard sizes within one of each other."""
    if kind == "arrays":
        n = 11
        load = lambda i: sources.from_arrays(
            np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2), np.arange(n),
            process_index=i, process_count=4,
        )
    else:
        n = 6
        load = lambda i: sources.load_split(
            _data_config("folder", folder), "unlabeled", process_index=i, process_count=4
        )
    shards = [load(i) for i in range(4)]
    keys = [[e["image"].tobytes() for e in _elements(s)] for s in shards]
    assert [s.num_local for s in shards] == [len(k) for k in keys]
    assert max(map(len, keys)) - min(map(len, keys)) <= 1
    assert len(set().union(*keys)) == sum(map(len, keys)) == n


# ---------------------------------------------------------------- TFDS (mocked)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """Metadata of a prepared 'mnist' (train 10, test 6): split sizes without data."""
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder("mnist", data_dir=str(data_dir))
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name="train", shard_lengths=[10], num_bytes=0),
        tfds.core.SplitInfo(name="test", shard_lengths=[6], num_bytes=0),
    ]))
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    return data_dir


def test_tfds_mocked(tfds_dir):
    config = _data_config("tfds", tfds_dir, name="mnist")
    with tfds.testing.mock_data(num_examples=6, data_dir=str(tfds_dir)):
        assert sources.num_examples(config, "train") == 10
        source = sources.load_split(config, "test", process_index=0, process_count=1)
        _check_format(source)
        assert (source.num_examples, source.num_local, source.num_classes) == (6, 6, 10)
        elements = _elements(source)
        assert len(elements) == 6 and elements[0]["image"].shape == (28, 28, 3)
        assert all(0 <= e["label"] < 10 for e in elements)
        # Not cached: the encoded PNGs, which decode to the same RGB pixels.
        uncached = _data_config("tfds", tfds_dir, name="mnist", cache=False)
        files = _elements(sources.load_split(uncached, "test", process_index=0,
                                             process_count=1))
        for encoded, decoded in zip(files, elements, strict=True):
            np.testing.assert_array_equal(augment.decode(tf.constant(encoded["image"])),
                                          decoded["image"])
            assert encoded["label"] == decoded["label"]
        shards = [sources.load_split(config, "train", process_index=i, process_count=4)
                  for i in range(4)]
        assert [s.num_local for s in shards] == [3, 3, 2, 2]
        with pytest.raises(DataError, match=r"no split 'validation'.*test, train"):
            sources.num_examples(config, "validation")


def test_tfds_not_prepared(tmp_path):
    config = _data_config("tfds", tmp_path, name="mnist")
    with pytest.raises(DataError, match=f"not prepared in {tmp_path}.*tfds build mnist"):
        sources.num_examples(config, "train")


def test_unknown_source():
    with pytest.raises(DataError, match=r"unknown data source 'folders'.*did you mean: folder"):
        sources.num_examples(_data_config("folders", "/tmp"), "train")


def test_uncached_folder_yields_files_whose_crops_are_the_decoded_images_crops(folder):
    """Not cached, a folder yields each file's bytes: `decode` gives the cached
    pixels, and a random crop of the bytes (a JPEG decoded inside the crop's box
    only) is the crop of those pixels, up to the JPEG's chroma upsampling at the
    box's edges."""
    pixels = _elements(sources.load_split(_data_config("folder", folder), "train",
                                          process_index=0, process_count=1))
    source = sources.load_split(_data_config("folder", folder, cache=False), "train",
                                process_index=0, process_count=1)
    assert source.dataset.element_spec["image"] == sources.ENCODED_IMAGE
    files = _elements(source)
    assert [e["label"] for e in files] == [e["label"] for e in pixels]
    for encoded, decoded in zip(files, pixels, strict=True):
        encoded["image"] = tf.constant(encoded["image"])
        np.testing.assert_array_equal(augment.decode(encoded["image"]), decoded["image"])
        for i in range(4):
            seed = tf.constant([i, 5], tf.int64)
            np.testing.assert_allclose(
                augment.random_resized_crop(encoded["image"], seed, 12, scale=(0.2, 1.0)),
                augment.random_resized_crop(decoded["image"], seed, 12, scale=(0.2, 1.0)),
                atol=2 / 255)


def test_pipelines_read_an_uncached_folder_as_they_read_a_cached_one(folder):
    """The training views (crops of the files' bytes) and the evaluation images
    (decoded whole) of an uncached folder are those of the cached one."""
    from sslx.data import pipeline
    from sslx.data.spec import input_spec

    config = config_defaults.base_config()
    config.data = _data_config("folder", folder, image_size=20)
    config.views.global_crops.size = 12
    config.train.batch_size = 4
    batches = {}
    for cache in (True, False):
        config.data.cache = cache
        train = next(pipeline.train_iterator(config, input_spec(config), inputs=("views", "label")))
        evaluation = next(pipeline.eval_iterator(config, "train", batch_size=8, size=16))
        batches[cache] = train, evaluation
    (train, evaluation), (uncached_train, uncached_eval) = batches[True], batches[False]
    np.testing.assert_array_equal(uncached_train["label"], train["label"])
    for got, want in zip(uncached_train["views"], train["views"], strict=True):
        np.testing.assert_allclose(got, want, atol=2 / 255 / min(config.data.std))
    for key in evaluation:
        np.testing.assert_array_equal(uncached_eval[key], evaluation[key])
