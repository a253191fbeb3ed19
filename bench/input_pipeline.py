r"""Throughput of the training input pipeline of a recipe, alone (no model).

    python bench/input_pipeline.py --config=configs/simclr_fmnist.py [--batches 20] [--warmup 3]

Pulls batches holding the inputs of the recipe's method from
`sslx.data.pipeline.train_iterator` (decode, crops, augmentations, masks,
batching on tf.data's private threadpool) after `--warmup`
batches (which fill the cache and the prefetch buffer) and reports images/s,
and images/s per core of the threadpool the pipeline actually used
(`config.data.threads`, or cores // 2 when it is 0). Compare with
bench/train_step.py: the input keeps up when its images/s exceed the step's.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/x.py[:arg].")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed batches first.")


def threadpool_size(config) -> int:
    """The private threadpool size `train_iterator` uses for this config."""
    return config.data.threads or max(1, (os.cpu_count() or 2) // 2)


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None:
        sys.exit("input_pipeline.py: --config is required")
    import tensorflow as tf

    from sslx import methods
    from sslx.data import pipeline
    from sslx.data.spec import input_spec

    tf.config.set_visible_devices([], "GPU")
    config = _CONFIG.value
    spec = input_spec(config)
    length = methods.TrainLength(total_steps=1, steps_per_epoch=1)  # only its inputs are read
    inputs = methods.build(config, length, spec).inputs
    batches = pipeline.train_iterator(config, spec, inputs=inputs)
    for _ in range(_WARMUP.value):
        batch = next(batches)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
        batch = next(batches)
    seconds = time.perf_counter() - start
    local_batch = batch["label"].shape[0]
    threads = threadpool_size(config)
    images_per_s = _BATCHES.value * local_batch / seconds
    where = config.data.name if config.data.source == "tfds" else config.data.path
    result = {
        "data": f"{config.data.source}:{where}",
        "views": [list(v.shape[1:3]) for v in batch["views"]], "batch_size": local_batch,
        "batches": _BATCHES.value, "seconds": seconds, "images_per_s": images_per_s,
        "threads": threads, "images_per_s_per_core": images_per_s / threads,
        "crops_per_s": images_per_s * len(batch["views"]),
    }
    print(json.dumps(result))
    print(f"input pipeline {result['data']}, {len(batch['views'])} views "
          f"{[v[0] for v in result['views']]} px, batch {local_batch}: "
          f"{images_per_s:.1f} images/s, {result['images_per_s_per_core']:.1f} images/s per "
          f"core ({threads} threads)")


if __name__ == "__main__":
    app.run(main)
