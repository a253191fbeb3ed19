"""Where images come from: IDX files, TFDS, an image folder or numpy arrays.

Every source gives the same thing, a `tf.data.Dataset` of
`{'image': uint8 [H, W, 3], 'label': int32}` holding this host's shard of a split
in a fixed order (label -1 where the split has no labels), so augmentation and
batching never care where the data lives. Grayscale images are tiled to three
channels here: models and colour ops always see RGB (saturation and hue jitter
are then no-ops on gray data).

Each host reads only its own, disjoint shard; the shards of all hosts cover the
split and differ in size by at most one example. Bad paths, splits, arrays and
images raise `DataError` before any training starts; an image folder's unreadable
files may instead be dropped with a warning (`config.data.bad_images='skip'`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import hashlib
import itertools
import logging
import os
import re
import struct
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sslx.data import photos
from sslx.data.augment import decode
from sslx.errors import ConfigError, DataError, close_matches

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# What an image folder does with files that do not decode (`config.data.bad_images`).
BAD_IMAGES = ("fail", "skip")
_SHOWN_BAD_PATHS = 3  # paths a skip warning names
# Skip mode's verdicts, per split listing (keyed by its digest): see `_skipped_files`.
_SKIPPED: dict[str, frozenset[str]] = {}
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

# What every source's dataset yields, one example at a time. Folder and TFDS
# splits read with `config.data.cache` off yield the encoded file instead of
# its pixels (ENCODED_IMAGE): the training crops then decode only their window
# of a JPEG, and whatever needs the whole image decodes it (`augment.decode`).
EXAMPLE_SPEC = {"image": tf.TensorSpec([None, None, 3], tf.uint8),
                "label": tf.TensorSpec([], tf.int32)}
ENCODED_IMAGE = tf.TensorSpec([], tf.string)

log = logging.getLogger("sslx")


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
    if len(_image_array(images, "from_arrays")) == 0:
        raise DataError("from_arrays got no images (an empty array): pass at least one image")
    return _array_source(
        images, labels, "from_arrays", *resolve_process(process_index, process_count)
    )


def _dispatch(data_config: ml_collections.ConfigDict) -> tuple[Callable, Callable]:
    _bad_images_mode(data_config)  # a misspelt choice fails for every source, not only folders
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


def _check_not_empty(n: int, split: str, what: str,
                     reason: str = "it holds no examples") -> None:
    if n == 0:
        raise DataError(f"split {split!r} of {what} is empty: {reason}")


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
    images = _image_array(images, what)
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


def _image_array(images: np.ndarray, what: str) -> np.ndarray:
    """`images` as uint8 [N, H, W, 1|3], or a `DataError` naming `what`, the shape and
    the fix, raised when the arrays are read, before anything compiles."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(
            f"images of {what} are {images.dtype} {list(images.shape)}; expected uint8 "
            "[N, H, W] or [N, H, W, 1|3] (scale to 0..255 and cast to uint8)"
        )
    if images.shape[-1] not in (1, 3):
        raise DataError(
            f"images of {what} are {list(images.shape)}, with {images.shape[-1]} channels "
            f"where sslx reads 1 (gray) or 3 (RGB): {_channel_fix(images.shape)}"
        )
    return images


def _channel_fix(shape: tuple[int, ...]) -> str:
    """How to turn images of `shape` [N, H, W, C] into gray or RGB ones."""
    if shape[1] in (1, 3):
        return "the channel axis looks first, so move it last with images.transpose(0, 2, 3, 1)"
    if shape[-1] == 4:
        return "drop the alpha channel of RGBA images with images[..., :3]"
    if shape[-1] == 2:
        return "drop the alpha channel of gray+alpha images with images[..., :1]"
    return "convert them to 1 or 3 channels"


# How much smaller than the nominal side `data.image_size` train images may be: a
# recipe may upsample small images a little (jigsaw's 3x3 tiles of 28 px
# Fashion-MNIST), but crops of images a fraction of the size the recipe was made
# for (an ImageNet recipe on 28 px images) are mostly interpolation.
MAX_UPSAMPLING = 2


def _check_image_side(
    images: np.ndarray, data_config: ml_collections.ConfigDict, split: str, what: str
) -> None:
    """Train images more than `MAX_UPSAMPLING` times smaller than the nominal side
    `data_config.image_size` would pass the views' size check (made against the
    nominal side) and be blown up by every crop; arrays know their real side, so
    the mismatch is named here. Other splits are only embedded, which resizes
    images of any size."""
    side, nominal = min(images.shape[1:3]), data_config.image_size
    if split == data_config.train_split and side * MAX_UPSAMPLING < nominal:
        raise DataError(
            f"images of {what} are {images.shape[1]}x{images.shape[2]} px, more than "
            f"{MAX_UPSAMPLING}x smaller than config.data.image_size={nominal} that the view "
            f"sizes are checked against: set config.data.image_size={side} (and every "
            f"config.views.<group>.size to at most {side}) or use images of at least "
            f"{-(-nominal // MAX_UPSAMPLING)} px"
        )


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
    _check_image_side(_image_array(images, what), data_config, split, what)
    return _array_source(images, labels, what, process_index, process_count)


def _count_arrays(data_config: ml_collections.ConfigDict, split: str) -> int:
    """Checks the arrays as loading does: they are read in full anyway."""
    images = _npz_arrays(data_config, split)[0]
    what = f"{data_config.path}:{split}"
    _check_image_side(_image_array(images, what), data_config, split, what)
    return len(images)


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
    if images.ndim not in (3, 4) or labels.shape != images.shape[:1]:
        raise DataError(
            f"{images_path} {list(images.shape)} and {labels_path} {list(labels.shape)} "
            "do not pair up as images [N, H, W(, C)] and labels [N]"
        )
    _check_not_empty(len(images), split, f"IDX directory {data_config.path}")
    _check_image_side(_image_array(images, images_path), data_config, split, images_path)
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


def _check_image_files(paths: list[str], threads: int = 16) -> dict[str, str]:
    """`{path: what is wrong}` of the unreadable files among `paths`, in their order;
    the caller fails or skips (`config.data.bad_images`), so a bad file is named
    now rather than failing somewhere inside tf.data mid-training.

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

    def check(some: list[str]) -> list[tuple[str, str]]:
        return [(path, problem) for path in some if (problem := _file_problem(path))]

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        found = dict(itertools.chain.from_iterable(
            pool.map(check, [paths[i::threads] for i in range(threads)])))
    return {path: found[path] for path in paths if path in found}


def _file_problem(path: str) -> str | None:
    """What keeps the pipeline from decoding `path`, or None when it decodes."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            head = f.read(8)
            size = f.size()
            f.seek(max(0, size - len(_PNG_END)))
            tail = f.read()
    except tf.errors.OpError as error:
        return f"cannot be read ({_op_reason(error)})"
    if not head.startswith(_MAGIC_BYTES):
        return "is not a readable JPEG or PNG image"
    if not tail.endswith(_END_MARKERS):
        return _decode_problem(path)
    return None


def _decode_problem(path: str) -> str | None:
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        return ("is truncated or corrupt: it lacks the end-of-image marker and does not "
                f"decode ({_op_reason(error)})")
    return None


def _op_reason(error: tf.errors.OpError) -> str:
    # TF prefixes the op's message with the function that ran it: keep the message.
    return re.sub(r"\{\{.*?\}\}\s*", "", error.message or type(error).__name__).strip()


def _bad_images_mode(data_config: ml_collections.ConfigDict) -> str:
    """`config.data.bad_images`; 'fail' where a config predates the field."""
    mode = data_config.get("bad_images", "fail")
    if mode not in BAD_IMAGES:
        raise ConfigError(
            f"config.data.bad_images={mode!r} is not one of {', '.join(BAD_IMAGES)}"
            f"{close_matches(str(mode), BAD_IMAGES)}"
        )
    return mode


def _raise_first_bad(bad: dict[str, str], checked: int) -> None:
    """Fail mode: names the first bad file and how many more there are."""
    if not bad:
        return
    path, problem = next(iter(bad.items()))
    more = ""
    if len(bad) > 1:
        more = f" ({len(bad) - 1} more of the {checked} files checked are bad too)"
    raise DataError(
        f"{path} {problem}{more}; delete or replace it, or set "
        "config.data.bad_images='skip' to train without the unreadable files"
    )


def _skipped_files(paths: list[str], where: str) -> frozenset[str]:
    """Skip mode: the unreadable files of a whole split listing, checked and logged
    once per process, so the count (steps per epoch) and every later load of the
    split drop the same files even if the folder changes in between. Keyed by a
    digest, not the listing itself: a million paths would stay in memory."""
    key = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    if key not in _SKIPPED:
        bad = _check_image_files(paths)
        if bad:
            shown = ", ".join(list(bad)[:_SHOWN_BAD_PATHS])
            log.warning("skipping %d of %d image files of %s that do not decode "
                        "(config.data.bad_images='skip'): %s%s", len(bad), len(paths), where,
                        shown, ", ..." if len(bad) > _SHOWN_BAD_PATHS else "")
        _SKIPPED[key] = frozenset(bad)
    return _SKIPPED[key]


def _readable_listing(
    data_config: ml_collections.ConfigDict, split: str
) -> tuple[list[str], np.ndarray, int | None]:
    """`_folder_listing` less the unreadable files in skip mode. Skip mode checks
    the whole split on every host (all hosts must shard, and count, the same
    listing); fail mode lists only, and `_load_folder` checks this host's shard."""
    paths, labels, num_classes = _folder_listing(data_config, split)
    if _bad_images_mode(data_config) != "skip":
        return paths, labels, num_classes
    where = f"image folder {data_config.path} split {split!r}"
    bad = _skipped_files(paths, where)
    keep = np.asarray([path not in bad for path in paths], bool)
    _check_not_empty(
        int(keep.sum()), split, f"image folder {data_config.path}",
        f"all {len(paths)} of its image files are unreadable and "
        "config.data.bad_images='skip' dropped them; replace them with JPEG or PNG images",
    )
    return [path for path, good in zip(paths, keep, strict=True) if good], labels[keep], num_classes


def _decode_file(path: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
    return {"image": decode(tf.io.read_file(path)), "label": label}


def _read_file(path: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
    return {"image": tf.io.read_file(path), "label": label}


def _load_folder(
    data_config: ml_collections.ConfigDict, split: str, process_index: int, process_count: int
) -> Source:
    paths, labels, num_classes = _readable_listing(data_config, split)
    lo, hi = _shard_bounds(len(paths), process_index, process_count)
    if _bad_images_mode(data_config) == "fail":
        _raise_first_bad(_check_image_files(paths[lo:hi]), hi - lo)
    # Cached: decoded once. Not cached: the file's bytes, decoded where they are cropped.
    dataset = tf.data.Dataset.from_tensor_slices((paths[lo:hi], labels[lo:hi])).map(
        _decode_file if data_config.cache else _read_file,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )
    return Source(dataset, len(paths), hi - lo, num_classes, process_index, process_count)


def _count_folder(data_config: ml_collections.ConfigDict, split: str) -> int:
    """A listing only in fail mode (any bad file then stops the load), the checked
    listing in skip mode: either way the count is what the shards read."""
    return len(_readable_listing(data_config, split)[0])


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


def _tfds_example(features: tfds.features.FeaturesDict, encoded: bool) -> Callable:
    """Maps a TFDS example, decoded or `encoded` (its image the file's bytes), to the
    source format."""
    gray = features["image"].shape[-1] == 1 and not encoded  # `decode` makes RGB itself
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
    features = builder.info.features
    if "image" not in features:
        raise DataError(f"TFDS features {list(features)} have no 'image' to learn from")
    # Not cached: images stay encoded, so random crops of JPEGs decode only their window.
    encoded = not data_config.cache and isinstance(features["image"], tfds.features.Image)
    dataset = builder.as_dataset(
        split=local_split,
        shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False),  # `config.data.cache` decides
        decoders={"image": tfds.decode.SkipDecoding()} if encoded else None,
    ).map(_tfds_example(features, encoded), num_parallel_calls=tf.data.AUTOTUNE)
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
