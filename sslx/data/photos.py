"""A small labelled RGB source that needs no download: square patches cut from
the two photos scikit-learn ships (`sklearn.datasets.load_sample_images`:
china.jpg and flower.jpg, 427x640).

`config.data.source = "sample_photos"`: patches of side `config.data.image_size`
at uniformly random places, a fixed set per split (`train` 4096, `test` 1024,
each its own seed). The label is where a patch comes from, one of 8 regions:
which photo and which quadrant of it (a patch lies wholly inside its quadrant).
The splits are different patches of the same photos, so they overlap; what a
k-NN on them measures is whether features tell apart the regions of two
photos, a check that a colour-learning CPU run learns something, not a benchmark.
"""

from __future__ import annotations

import functools

import ml_collections
import numpy as np

from sslx.errors import DataError

SPLITS = {"train": (4096, 0), "test": (1024, 1)}  # split: (patches, seed)
REGIONS_PER_PHOTO = 4  # quadrants


def load(data_config: ml_collections.ConfigDict, split: str, process_index: int,
         process_count: int):
    """This host's shard of `split` (a `sources.Source`)."""
    from sslx.data.sources import from_arrays  # sources registers this module

    images, labels = patches(split, data_config.image_size)
    return from_arrays(images, labels, process_index=process_index,
                       process_count=process_count)


def count(data_config: ml_collections.ConfigDict, split: str) -> int:
    """Patches in `split`."""
    del data_config
    return _split(split)[0]


def _split(split: str) -> tuple[int, int]:
    if split not in SPLITS:
        raise DataError(f"source sample_photos has no split {split!r}; available splits: "
                        f"{', '.join(SPLITS)}")
    return SPLITS[split]


@functools.cache
def patches(split: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """`(uint8 [N, side, side, 3], int32 [N])` of `split`: region i * 4 + q is
    quadrant q (row-major) of photo i."""
    from sklearn.datasets import load_sample_images  # only this source needs scikit-learn

    size, seed = _split(split)
    photos = load_sample_images().images
    height, width = photos[0].shape[0] // 2, photos[0].shape[1] // 2
    if not 1 <= side <= min(height, width):
        raise DataError(f"config.data.image_size={side}: sample_photos cuts patches of that "
                        f"side from quadrants of {height}x{width}; use 1..{min(height, width)}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(photos) * REGIONS_PER_PHOTO, size).astype(np.int32)
    tops = rng.integers(0, height - side + 1, size)
    lefts = rng.integers(0, width - side + 1, size)
    images = np.empty((size, side, side, 3), np.uint8)
    for i, (label, top, left) in enumerate(zip(labels, tops, lefts, strict=True)):
        photo, quadrant = divmod(int(label), REGIONS_PER_PHOTO)
        row, column = divmod(quadrant, 2)
        y, x = row * height + top, column * width + left
        images[i] = photos[photo][y:y + side, x:x + side]
    return images, labels
