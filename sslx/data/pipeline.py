"""Per-host tf.data pipelines that feed numpy batches to the trainer and evaluators.

Each host reads its own shard and yields its share of the global batch as numpy;
the trainer assembles the global jax.Array. All work runs in a bounded private
tf.data threadpool so XLA keeps its cores, and all randomness is seeded from
`config.seed` and the host: the stream of batches is a fixed function of the
config, and `start_step` starts it at that batch, so a resumed run sees exactly
the batches an uninterrupted run would have seen. Each epoch's order is a
function of (seed, host, epoch) only, so resuming reads at most one epoch.

A training example holds the inputs the method asks for (`Method.inputs`), each
made by its producer (`sslx.data.producers`) from the run's `InputSpec`;
`example_batch` reads the structure of a batch from the producers' declarations,
which every training pipeline checks against what they make.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np
import tensorflow as tf

from sslx.data import producers
from sslx.data.augment import center_crop, decode, normalize, resize
from sslx.data.sources import Source, load_split, num_examples, resolve_process
from sslx.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sslx.data.spec import InputSpec

Batch = dict[str, Any]


def train_iterator(
    config: ml_collections.ConfigDict,
    spec: InputSpec,
    *,
    inputs: Sequence[str],
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    source: Source | None = None,
) -> Iterator[Batch]:
    """Endless batches of this host's `local_batch` examples holding `inputs`, each
    made by its producer (`sslx.data.producers`): 'views' is `(float32
    [local_batch, size, size, 3], ...)` in `spec.crops` order, 'label' int32
    [local_batch], 'masks' `(bool [local_batch, patches], ...)`, one per global
    crop (see `sslx.data.masks`).

    `source` replaces `config.data`'s train split (e.g. `from_arrays(...)`); its
    own process index/count are then used. `start_step` skips the batches before
    it (without augmenting them), so resuming continues the uninterrupted stream:
    whole epochs are skipped by arithmetic, and only the examples of the current
    epoch before `start_step` are read again."""
    inputs = tuple(inputs)
    producers.check(inputs)
    if start_step < 0:
        raise ConfigError(f"start_step={start_step} must be >= 0")
    index, count = _host(source, process_index, process_count)
    local_batch = _local_batch(config.train.batch_size, count, "config.train.batch_size")
    if source is None:
        source = load_split(
            config.data, config.data.train_split, process_index=index, process_count=count
        )
    if source.num_local == 0:
        raise DataError(
            f"host {source.process_index} of {source.process_count} got no training examples: "
            f"the split holds only {source.num_examples}"
        )
    dataset = source.dataset
    if config.data.cache and not source.in_memory:
        dataset = dataset.cache()
    start = start_step * local_batch  # this host's examples before `start_step`
    dataset = (
        _epochs(dataset, config, source.process_index, first=start // source.num_local)
        .skip(start % source.num_local)
        .enumerate(start)  # counts elements over the whole run: seeds their augmentation
        .map(_example_fn(config, spec, inputs, source.process_index),
             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
    _check_declared(dataset.element_spec, producers.element_spec(inputs, spec), inputs)
    return _numpy_iterator(dataset.batch(local_batch, drop_remainder=True), config)


def _example_fn(config: ml_collections.ConfigDict, spec: InputSpec, inputs: tuple[str, ...],
                process_index: int):
    """The per-example map of `train_iterator`: `(counter, source example) -> training
    example`, seeded by the run's seed, the host and the example's position in the
    run's stream."""
    base_seed = tf.constant([config.seed, process_index], tf.int64)

    @tf.autograph.experimental.do_not_convert  # plain TF ops: skip slow autograph tracing
    def make(counter: tf.Tensor, example: dict[str, tf.Tensor]) -> Batch:
        seed = tf.random.fold_in(base_seed, counter)
        return producers.produce(inputs, example, seed, spec, config)

    return make


def _check_declared(made: Any, declared: Any, inputs: tuple[str, ...]) -> None:
    """A producer that makes other shapes or dtypes than it declares is a bug in it:
    `example_batch` (and so init) would disagree with the batches."""
    if made != declared:
        raise ValueError(f"the producers of {inputs} make {made} but declare {declared} "
                         "(sslx/data/producers.py)")


def eval_iterator(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    batch_size: int,
    size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    source: Source | None = None,
) -> Iterator[Batch]:
    """One pass over this host's shard of `split` in a fixed order:
    `{'image': float32 [local_b, size, size, 3] normalised, 'label': int32,
    'valid': bool}` with local_b = batch_size // process count.

    Every host yields the same number of batches (its last ones padded with
    valid=False), so evaluators running collectives over hosts stay in step.
    When `config.data.image_size` exceeds `size`, images are resized to
    size / 0.875 and center-cropped (ImageNet convention); otherwise they are
    resized to `size`."""
    index, count = _host(source, process_index, process_count)
    local_batch = _local_batch(batch_size, count, "eval batch_size")
    if source is None:
        source = load_split(config.data, split, process_index=index, process_count=count)
    largest_shard = -(-source.num_examples // source.process_count)
    total = -(-largest_shard // local_batch) * local_batch
    preprocess_image = eval_preprocess(config, size)

    @tf.autograph.experimental.do_not_convert
    def preprocess(example: dict[str, tf.Tensor]) -> Batch:
        return {"image": preprocess_image(decode(example["image"])), "label": example["label"],
                "valid": True}

    padding = tf.data.Dataset.from_tensors(
        {"image": tf.zeros([size, size, 3]), "label": -1, "valid": False}
    ).repeat()
    dataset = (
        source.dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .concatenate(padding)
        .take(total)
        .batch(local_batch)
    )
    return _numpy_iterator(dataset, config)


def eval_preprocess(config: ml_collections.ConfigDict, size: int):
    """The evaluation transform of one RGB image (uint8, or float in [0, 1]) of any
    size to a normalised float32 [size, size, 3]: evaluation, export and
    `sslx.load(...).embed` all see images through it."""
    crop = config.data.image_size > size
    mean, std = tuple(config.data.mean), tuple(config.data.std)

    @tf.autograph.experimental.do_not_convert
    def preprocess(image: tf.Tensor) -> tf.Tensor:
        image = center_crop(image, size) if crop else resize(image, size, size)
        return normalize(image, mean, std)

    return preprocess


def example_batch(spec: InputSpec, batch_size: int, *, inputs: Sequence[str]) -> dict[str, Any]:
    """Zeros with the structure, shapes and dtypes of a training batch of
    `batch_size` holding `inputs`, for shape inference, init and tests: the
    outputs the producers declare (`producers.element_spec`, which
    `train_iterator` checks against what they make), with a batch axis in front."""
    return tf.nest.map_structure(
        lambda s: np.zeros((batch_size, *s.shape), s.dtype.as_numpy_dtype),
        producers.element_spec(tuple(inputs), spec))


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
    """Full global batches in one pass over the train split."""
    n = num_examples(config.data, config.data.train_split)
    steps = n // config.train.batch_size
    if steps == 0:
        raise ConfigError(
            f"config.train.batch_size={config.train.batch_size} is larger than the {n} "
            f"examples of split {config.data.train_split!r}: lower the batch size"
        )
    return steps


def _host(
    source: Source | None, process_index: int | None, process_count: int | None
) -> tuple[int, int]:
    """This host's `(index, count)`: the source's own when one is given."""
    if source is not None:
        return source.process_index, source.process_count
    return resolve_process(process_index, process_count)


def _local_batch(batch_size: int, process_count: int, name: str) -> int:
    if batch_size < 1 or batch_size % process_count:
        raise ConfigError(
            f"{name}={batch_size} must be a positive multiple of the "
            f"{process_count} processes (each host feeds an equal share)"
        )
    return batch_size // process_count


def _epochs(dataset: tf.data.Dataset, config: ml_collections.ConfigDict, process_index: int,
            *, first: int) -> tf.data.Dataset:
    """Epochs `first`, `first + 1`, ... of `dataset` end to end, each shuffled by its
    own seed, a function of (run seed, host, epoch) alone. So the order of an epoch
    needs no earlier epoch, and a run resuming late starts at its epoch: it reads
    at most the part of one epoch before its position, never the run's history."""
    host_seed = _shuffle_seed(config.seed, process_index)
    buffer = config.data.shuffle_buffer

    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        if buffer <= 1:
            return dataset
        return dataset.shuffle(buffer, seed=host_seed * _MAX_EPOCHS + index,
                               reshuffle_each_iteration=False)

    return tf.data.Dataset.range(first, _MAX_EPOCHS).flat_map(epoch)


# Epochs a run may take; also the stride between hosts' epoch seeds.
_MAX_EPOCHS = 2**20


def _shuffle_seed(seed: int, process_index: int) -> int:
    """One 32-bit seed per (run seed, host), from which each epoch's shuffle seed is made."""
    state = np.random.SeedSequence([seed % 2**32, process_index])
    return int(state.generate_state(1)[0])


def _numpy_iterator(dataset: tf.data.Dataset, config: ml_collections.ConfigDict) -> Iterator[Batch]:
    """Prefetched numpy batches from a deterministic pipeline on a bounded threadpool."""
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = config.data.threads or max(
        1, (os.cpu_count() or 2) // 2
    )
    options.threading.max_intra_op_parallelism = 1
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options).as_numpy_iterator()
