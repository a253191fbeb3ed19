"""Where images come from: IDX files, TFDS, an image folder or numpy arrays.

Every source gives the same thing, a `tf.data.Dataset` of
`{'image': uint8 [H, W, 3], 'label': int32}` holding this host's shard of a split
in a fixed order (label -1 where the split has no labels), so augmentation and
batching never care where the data lives. Grayscale images are tiled to three
channels here: models and colour ops always see RGB (saturation and hue jitter
are then no-ops on gray data).

Each host reads only its own, disjoint shard; the shards of all hosts cover the
split and differ in size by at most one example. Bad paths, splits and images
raise `DataError` before any training starts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import os
import re
import struct
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sslx.data import photos
from sslx.errors import ConfigError, DataError, close_matches

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_MAGIC_BYTES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk that closes a PNG
_END_MARKERS = (b"\xff\xd9", _PNG_END)  # JPEG end of image, PNG IEND
_IDX_PREFIXES = {"train": "train", "test": "t10k"}
_IDX_INSTALL_HINT = (
    "install Fashion-MNIST with `apt-get install dataset-fashion-mnist` or set "
    "--config.data.path to a directory holding train-/t10k-{images-idx3,labels-idx1}-ubyte[.gz]"
)
# Folder files are read in one fixed pseudo-random order (the same on every host)
# so that each host's shard and its shuffle buffer mix all classes, as TFDS's
# pre-shuffled records do; a class-sorted order would fill the buffer with few classes.
_FOLDER_ORDER_SEED = 0

# What every source's dataset yields, one example at a time.
EXAMPLE_SPEC = {"image": tf.TensorSpec([None, None, 3], tf.uint8),
                "label": tf.TensorSpec([], tf.int32)}


@dataclasses.dataclass(frozen=True)
class Source:
    """One split as seen by one host.

    `dataset` is this host's shard only, neither shuffled nor repeated.
    `num_examples` counts the whole split over all hosts, `num_local` this shard.
    `in_memory` is True when the decoded images already sit in host memory, so
    caching them again would only copy them.
    """

    dataset: tf.data.Dataset
    num_examples: int
    num_local: int
    num_classes: int | None
    process_index: int = 0
    process_count: int = 1
    in_memory: bool = False


def resolve_process(
    process_index: int | None = None, process_count: int | None = None
) -> tuple[int, int]:
    """`(index, count)` of this host; missing values come from jax (imported here
    only, so the data package itself never initialises a jax backend)."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index={process_index} is not in [0, {process_count})")
    return process_index, process_count


def load_split(
    data_config: ml_collections.ConfigDict,
    split: str,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Source:
    """This host's shard of `split` from the source that `data_config.source` names."""
    loader, _ = _dispatch(data_config)
    return loader(data_config, split, *resolve_process(process_index, process_count))


def num_examples(data_config: ml_collections.ConfigDict, split: str) -> int:
    """Examples in the whole split, read from headers or listings (no decoding)."""
    _, counter = _dispatch(data_config)
    return counter(data_config, split)


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Source:
    """A source over in-memory uint8 images [N, H, W] or [N, H, W, 1|3] and
    optional integer labels [N] (programmatic use: notebooks, tests)."""
    return _array_source(
        images, labels, "from_arrays", *resolve_process(process_index, process_count)
    )


def _dispatch(data_config: ml_collections.ConfigDict) -> tuple[Callable, Callable]:
    try:
        return _SOURCES[data_config.source]
    except KeyError:
        raise DataError(
            f"unknown data source {data_config.source!r}"
            f"{close_matches(data_config.source, _SOURCES)}: set --config.data.source "
            f"to one of {', '.join(_SOURCES)}"
        ) from None


def _shard_bounds(n: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Contiguous, disjoint shards whose sizes differ by at most one."""
    return n * process_index // process_count, n * (process_index + 1) // process_count


def _unknown_split(split: str, what: str, available: list[str]) -> DataError:
    return DataError(
        f"{what} has no split {split!r}{close_matches(split, available)}; "
        f"available splits: {', '.join(sorted(available)) or 'none'}"
    )


def _check_not_empty(n: int, split: str, what: str) -> None:
    if n == 0:
        raise DataError(f"split {split!r} of {what} is empty: it holds no examples")


def _to_rgb(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {"image": tf.image.grayscale_to_rgb(example["image"]), "label": example["label"]}


# ---------------------------------------------------------------- in-memory arrays


def _array_source(
    images: np.ndarray,
    labels: np.ndarray | None,
    what: str,
    process_index: int,
    process_count: int,
) -> Source:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"images of {what} are {images.dtype} {list(images.shape)}; expected uint8 "
            "[N, H, W] or [N, H, W, 1|3] (scale to 0..255 and cast to uint8)"
        )
    n = len(images)
    if labels is None:
        labels = np.full([n], -1, np.int32)
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels of {what} are {labels.dtype} {list(labels.shape)}; expected integers [{n}]"
        )
    num_classes = int(labels.max()) + 1 if n and labels.max() >= 0 else None
    lo, hi = _shard_bounds(n, process_index, process_count)
    dataset = tf.data.Dataset.from_tensor_slices(
        {"image": images[lo:hi], "label": labels[lo:hi].astype(np.int32)}
    )
    if images.shape[-1] == 1:  # tile lazily: the stored copy stays one channel
        dataset = dataset.map(_to_rgb)
    return Source(dataset, n, hi - lo, num_classes, process_index, process_count, in_memory=True)


def _npz_arrays(
    data_config: ml_collections.ConfigDict, split: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """`(images, labels)` of `split` from the .npz at `data_config.path`."""
    path = data_config.path
    if not tf.io.gfile.exists(path):
        raise DataError(
            f"arrays file {path} does not exist: set --config.data.path to a .npz holding "
            f"{split}_images (uint8 [N, H, W(, C)]) and optionally {split}_labels"
        )
    with tf.io.gfile.GFile(path, "rb") as f, np.load(f) as npz:
        available = [k.removesuffix("_images") for k in npz.files if k.endswith("_images")]
        if f"{split}_images" not in npz.files:
            raise _unknown_split(split, f"arrays file {path}", available)
        images = npz[f"{split}_images"]
        labels = npz[f"{split}_labels"] if f"{split}_labels" in npz.files else None
    _check_not_empty(len(images), split, f"arrays file {path}")
    return images, labels


def _load_arrays(
    data_config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int
) -> Source:
    images, labels = _npz_arrays(data_config, split)
    what = f"{data_config.path}:{split}"
    return _array_source(images, labels, what, process_index, process_count)


def _count_arrays(data_config: ml_collections.ConfigDict, split: str) -> int:
    return len(_npz_arrays(data_config, split)[0])


# ---------------------------------------------------------------- IDX (MNIST format)


def _idx_paths(data_config: ml_collections.ConfigDict, split: str) -> tuple[str, str]:
    """The images and labels files of `split`, plain or gzipped."""
    root = data_config.path
    if not tf.io.gfile.isdir(root):
        raise DataError(f"IDX directory {root} does not exist: {_IDX_INSTALL_HINT}")
    if split not in _IDX_PREFIXES:
        raise _unknown_split(split, f"IDX directory {root}", list(_IDX_PREFIXES))
    paths = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{_IDX_PREFIXES[split]}-{kind}-ubyte"
        candidates = [os.path.join(root, name + ext) for ext in ("", ".gz")]
        found = [p for p in candidates if tf.io.gfile.exists(p)]
        if not found:
            raise DataError(f"IDX file {candidates[0]}[.gz] not found: {_IDX_INSTALL_HINT}")
        paths.append(found[0])
    return paths[0], paths[1]


def _open_idx(path: str):
    raw = tf.io.gfile.GFile(path, "rb")
    return gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw


def _idx_header(path: str, data: bytes) -> tuple[int, ...]:
    """Dimensions from an IDX header: two zero bytes, type 0x08 (uint8), rank, sizes."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or len(data) < 4 + 4 * data[3]:
        raise DataError(f"{path} is not a uint8 IDX file (bad header); re-download it")
    return struct.unpack(f">{data[3]}I", data[4:4 + 4 * data[3]])


def _read_idx(path: str) -> np.ndarray:
    with _open_idx(path) as f:
        data = f.read()
    dims = _idx_header(path, data)
    flat = np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims))
    if flat.size != np.prod(dims):
        raise DataError(f"{path} is truncated: header says {dims}; re-download it")
    return flat.reshape(dims)


def _load_idx(
    data_config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int
) -> Source:
    images_path, labels_path = _idx_paths(data_config, split)
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(
            f"{images_path} {list(images.shape)} and {labels_path} {list(labels.shape)} "
            "do not pair up as images [N, H, W] and labels [N]"
        )
    _check_not_empty(len(images), split, f"IDX directory {data_config.path}")
    return _array_source(images, labels, images_path, process_index, process_count)


def _count_idx(data_config: ml_collections.ConfigDict, split: str) -> int:
    labels_path = _idx_paths(data_config, split)[1]
    with _open_idx(labels_path) as f:
        n = _idx_header(labels_path, f.read(8))[0]
    _check_not_empty(n, split, f"IDX directory {data_config.path}")
    return n


# ---------------------------------------------------------------- image folder


def _subdirs(root: str) -> list[str]:
    return sorted(
        d.rstrip("/") for d in tf.io.gfile.listdir(root) if tf.io.gfile.isdir(os.path.join(root, d))
    )


def _image_files(directory: str) -> list[str]:
    return sorted(
        os.path.join(directory, f)
        for f in tf.io.gfile.listdir(directory)
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )


def _folder_listing(
    data_config: ml_collections.ConfigDict, split: str
) -> tuple[list[str], np.ndarray, int | None]:
    """`(paths, labels, num_classes)` of a split in the fixed folder order.

    `root/<split>/<class>/*` is labelled by the sorted class names of the train
    split (so every split agrees on label ids); `root/<split>/*` is unlabelled.
    A flat folder, `root/*` with no subfolders, is one unlabelled split that
    every split name reads (train on a folder of photos, then embed them)."""
    root = data_config.path
    if not tf.io.gfile.isdir(root):
        raise DataError(
            f"image folder {root} does not exist: set --config.data.path to a directory "
            "laid out as <path>/<split>/<class>/*.jpg (or <path>/<split>/*.jpg or "
            "<path>/*.jpg, unlabelled)"
        )
    split_dir = os.path.join(root, split)
    if not tf.io.gfile.isdir(split_dir):
        if _subdirs(root) or not _image_files(root):
            raise _unknown_split(split, f"image folder {root}", _subdirs(root))
        split_dir = root
    class_dirs = _subdirs(split_dir)
    loose = _image_files(split_dir)
    if class_dirs and loose:
        raise DataError(
            f"{split_dir} mixes class folders and loose images (e.g. {loose[0]}): "
            "use one layout, <split>/<class>/* or <split>/*"
        )
    if class_dirs:
        paths, labels, num_classes = _labelled_files(data_config, split, class_dirs)
    else:
        paths, labels, num_classes = loose, np.full([len(loose)], -1, np.int32), None
    _check_not_empty(len(paths), split, f"image folder {root} (no {'/'.join(IMAGE_EXTENSIONS)})")
    order = np.random.default_rng(_FOLDER_ORDER_SEED).permutation(len(paths))
    return [paths[i] for i in order], labels[order], num_classes


def _labelled_files(
    data_config: ml_collections.ConfigDict, split: str, class_dirs: list[str]
) -> tuple[list[str], np.ndarray, int]:
    train_dir = os.path.join(data_config.path, data_config.train_split)
    classes = _subdirs(train_dir) if tf.io.gfile.isdir(train_dir) else class_dirs
    class_ids = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for name in class_dirs:
        if name not in class_ids:
            raise DataError(
                f"class folder {os.path.join(data_config.path, split, name)} has no "
                f"counterpart in the train split {train_dir}, so it has no label id"
            )
        files = _image_files(os.path.join(data_config.path, split, name))
        paths += files
        labels += [class_ids[name]] * len(files)
    return paths, np.asarray(labels, np.int32), len(classes)


def _check_image_files(paths: list[str], threads: int = 16) -> None:
    """Names a bad file now rather than failing somewhere inside tf.data mid-training.

    Each file is opened once and two small pieces are read: its first bytes (the
    JPEG or PNG magic) and its last bytes (the JPEG end-of-image marker or the PNG
    IEND chunk, which a truncated file has lost). Nothing is decoded, so the check
    stays cheap for large folders: two short reads per file, on local disks
    usually from the same cached page. A file whose tail lacks the marker may still
    be valid (data appended after the image, as in motion photos), so only those
    rare files are decoded, with the decoder the pipeline uses: the check then
    refuses exactly the files the pipeline could not read. Threads over
    interleaved slices: reads are I/O bound (remote filesystems), and one task per
    file would cost more than the read."""

    def check(some: list[str]) -> None:
        for path in some:
            with tf.io.gfile.GFile(path, "rb") as f:
                head = f.read(8)
                size = f.size()
                f.seek(max(0, size - len(_PNG_END)))
                tail = f.read()
            if not head.startswith(_MAGIC_BYTES):
                raise DataError(f"{path} is not a readable JPEG or PNG image: delete or replace it")
            if not tail.endswith(_END_MARKERS):
                _check_decodes(path)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(check, [paths[i::threads] for i in range(threads)]))


def _check_decodes(path: str) -> None:
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        # TF prefixes the op's message with the function that ran it: keep the message.
        reason = re.sub(r"\{\{.*?\}\}\s*", "", error.message or type(error).__name__).strip()
        raise DataError(
            f"{path} is truncated or corrupt: it lacks the end-of-image marker and does not "
            f"decode ({reason}); delete or replace it"
        ) from None


def _decode_file(path: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return {"image": image, "label": label}


def _load_folder(
    data_config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int
) -> Source:
    paths, labels, num_classes = _folder_listing(data_config, split)
    lo, hi = _shard_bounds(len(paths), process_index, process_count)
    _check_image_files(paths[lo:hi])
    dataset = tf.data.Dataset.from_tensor_slices((paths[lo:hi], labels[lo:hi])).map(
        _decode_file, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return Source(dataset, len(paths), hi - lo, num_classes, process_index, process_count)


def _count_folder(data_config: ml_collections.ConfigDict, split: str) -> int:
    return len(_folder_listing(data_config, split)[0])


# ---------------------------------------------------------------- TFDS


def _tfds_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The prepared builder; `data_config.path` is its data_dir ('' = TFDS default).

    Never downloads: on a pod every host would race to prepare the same files."""
    try:
        builder = tfds.builder(data_config.name, data_dir=data_config.path or None)
    except tfds.core.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)
        raise DataError(
            f"unknown TFDS dataset {data_config.name!r}{close_matches(data_config.name, known)}"
        ) from None
    if not builder.is_prepared():
        raise DataError(
            f"TFDS dataset {data_config.name!r} is not prepared in {builder.data_dir}: run "
            f"`tfds build {data_config.name} --data_dir=DIR` once and set "
            "--config.data.path=DIR ('' for the TFDS default directory)"
        )
    return builder


def _tfds_num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
    try:
        n = builder.info.splits[split].num_examples
    except (KeyError, ValueError):
        raise _unknown_split(
            split, f"TFDS dataset {builder.name}", list(builder.info.splits)
        ) from None
    _check_not_empty(n, split, f"TFDS dataset {builder.name}")
    return n


def _tfds_example(features: tfds.features.FeaturesDict) -> Callable:
    """Maps a decoded TFDS example to the source format."""
    if "image" not in features:
        raise DataError(f"TFDS features {list(features)} have no 'image' to learn from")
    gray = features["image"].shape[-1] == 1
    labelled = "label" in features

    def example(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        image = tf.image.grayscale_to_rgb(ex["image"]) if gray else ex["image"]
        label = tf.cast(ex["label"], tf.int32) if labelled else tf.constant(-1, tf.int32)
        return {"image": image, "label": label}

    return example


def _load_tfds(
    data_config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int
) -> Source:
    builder = _tfds_builder(data_config)
    n = _tfds_num_examples(builder, split)
    local_split = tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count
    )
    dataset = builder.as_dataset(
        split=local_split,
        shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False),  # `config.data.cache` decides
    ).map(_tfds_example(builder.info.features), num_parallel_calls=tf.data.AUTOTUNE)
    features = builder.info.features
    num_classes = getattr(features["label"], "num_classes", None) if "label" in features else None
    num_local = builder.info.splits[local_split].num_examples
    return Source(dataset, n, num_local, num_classes, process_index, process_count)


def _count_tfds(data_config: ml_collections.ConfigDict, split: str) -> int:
    return _tfds_num_examples(_tfds_builder(data_config), split)


_SOURCES: dict[str, tuple[Callable[..., Source], Callable[..., int]]] = {
    "idx": (_load_idx, _count_idx),
    "tfds": (_load_tfds, _count_tfds),
    "folder": (_load_folder, _count_folder),
    "arrays": (_load_arrays, _count_arrays),
    "sample_photos": (photos.load, photos.count),  # offline RGB patches (sslx.data.photos)
}
