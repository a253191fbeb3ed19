"""The inputs of the pretext-task methods, made in the input pipeline with their labels.

"rotation" (RotNet, Gidaris et al. 2018): one augmented crop of each image and its
rotations by 0, 90, 180 and 270 degrees, all four in the batch as the official code
feeds them, each with its rotation as its label.

"jigsaw" (Noroozi & Favaro 2016): one augmented crop cut into a 3 x 3 grid of cells,
a tile at a random offset inside each cell (the gaps and jitter keep tiles from being
matched by their edges), each tile standardised on its own (so low-level statistics
do not give the position away), shuffled by a permutation drawn from a fixed set;
the label is the permutation's index in the set (`permutation_set`).

Both replace the "views" input: a method asks for one of them instead.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np
import tensorflow as tf

from sslx.data.augment import augment_view
from sslx.data.producers import Example, producer

if TYPE_CHECKING:
    from sslx.data.spec import InputSpec

ROTATIONS = 4  # 0, 90, 180, 270 degrees counter-clockwise: label k is k x 90 degrees
GRID = 3  # jigsaw cells per side
NUM_TILES = GRID * GRID
TILE_FRACTION = 64 / 75  # a tile's side over its cell's: the official 64 px tiles in 75 px cells


def _crop(example: Example, seed: tf.Tensor, spec: InputSpec,
          config: ml_collections.ConfigDict) -> tf.Tensor:
    """The image's one augmented, normalised crop, as the run's first crop spec says."""
    return augment_view(example["image"], seed, spec.crops[0], tuple(config.data.mean),
                        tuple(config.data.std))


def _rotation_outputs(spec: InputSpec) -> dict[str, Any]:
    size = spec.crops[0].size
    return {"views": (tf.TensorSpec([size, size, 3], tf.float32),) * ROTATIONS,
            "rotation": (tf.TensorSpec([], tf.int32),) * ROTATIONS}


@producer("rotation", stream=1_000_033, outputs=_rotation_outputs)
def _rotation(example: Example, seed: tf.Tensor, spec: InputSpec,
              config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`{'views': (crop rotated by k x 90 degrees for k = 0..3), 'rotation': (k, ...)}`."""
    crop = _crop(example, seed, spec, config)
    return {"views": tuple(tf.image.rot90(crop, k) for k in range(ROTATIONS)),
            "rotation": tuple(tf.constant(k, tf.int32) for k in range(ROTATIONS))}


# ---------------------------------------------------------------- jigsaw


def tile_size(crop_size: int) -> int:
    """The side of a jigsaw tile: `TILE_FRACTION` of a grid cell's side, a third of the
    crop (64 px in a 225 px crop, 4 px in a 16 px one); 0 when the crop is too small."""
    return round(crop_size // GRID * TILE_FRACTION)


def _all_permutations(n: int) -> np.ndarray:
    """Every permutation of range(n), int8 [n!, n], built by inserting element k at
    each position of every permutation of range(k)."""
    perms = np.zeros((1, 0), np.int8)
    for k in range(n):
        perms = np.concatenate([np.insert(perms, position, k, axis=1)
                                for position in range(k + 1)])
    return perms


@functools.lru_cache(maxsize=4)
def permutation_set(size: int, seed: int, num_tiles: int = NUM_TILES) -> np.ndarray:
    """`size` permutations of range(num_tiles), int32 [size, num_tiles], far apart in
    Hamming distance, a pure function of `(size, seed)` (cached).

    The greedy of Noroozi & Favaro (2016, Alg. 1): start from a permutation drawn with
    `seed`, then repeatedly add the candidate farthest from the chosen ones. Farthest
    here is the largest minimum distance to them, ties broken by the largest sum of
    distances (the paper's criterion alone). So the set's minimum pairwise distance
    is the distance of the last pick, and no other permutation lies farther than it
    from the set."""
    candidates = _all_permutations(num_tiles)
    # Hamming distance to permutation p: num_tiles - sum_k same[k, p[k]].
    same = np.stack([candidates == value for value in range(num_tiles)], axis=1)
    same = same.transpose(2, 1, 0).astype(np.uint8)  # [position, value, candidate]
    positions = np.arange(num_tiles)
    nearest = np.full(len(candidates), num_tiles + 1, np.int64)
    total = np.zeros(len(candidates), np.int64)
    chosen = [int(np.random.default_rng(seed).integers(len(candidates)))]
    while True:
        distance = num_tiles - same[positions, candidates[chosen[-1]]].sum(0, np.int64)
        nearest = np.minimum(nearest, distance)
        total += distance
        if len(chosen) == size:
            return candidates[chosen].astype(np.int32)
        # Lexicographic (nearest, total); the chosen ones have nearest 0 and rank last.
        chosen.append(int(np.argmax(nearest * (num_tiles * size + 1) + total)))


def _jigsaw_outputs(spec: InputSpec) -> dict[str, Any]:
    side = tile_size(spec.crops[0].size)
    return {"views": (tf.TensorSpec([side, side, 3], tf.float32),) * NUM_TILES,
            "permutation": tf.TensorSpec([], tf.int32)}


def _standardise(tile: tf.Tensor) -> tf.Tensor:
    """A tile to mean 0 and standard deviation 1 over all its pixels and channels (a
    constant tile to 0), after the dataset normalisation, as the official code does."""
    mean, variance = tf.nn.moments(tile, axes=[0, 1, 2])
    std = tf.sqrt(variance)
    return (tile - mean) / tf.where(std > 0, std, 1.0)


@producer("jigsaw", stream=1_000_037, outputs=_jigsaw_outputs)
def _jigsaw(example: Example, seed: tf.Tensor, spec: InputSpec,
            config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`{'views': (the 9 tiles, position t holding tile perm[t] in row-major order),
    'permutation': the index of perm in `permutation_set`}`."""
    fields = config.method
    crop_seed, offset_seed, label_seed = tf.unstack(tf.random.split(seed, 3))
    crop = _crop(example, crop_seed, spec, config)
    cell = spec.crops[0].size // GRID
    side = tile_size(spec.crops[0].size)
    offsets = tf.random.stateless_uniform([NUM_TILES, 2], offset_seed, 0, cell - side + 1,
                                          tf.int32)
    tiles = tf.stack([
        _standardise(tf.slice(crop, [n // GRID * cell + offsets[n, 0],
                                     n % GRID * cell + offsets[n, 1], 0], [side, side, 3]))
        for n in range(NUM_TILES)])
    perms = tf.constant(permutation_set(fields.num_permutations, fields.permutation_seed))
    label = tf.random.stateless_uniform([], label_seed, 0, fields.num_permutations, tf.int32)
    return {"views": tuple(tf.unstack(tf.gather(tiles, perms[label]))), "permutation": label}
