r"""Seconds from building the training input stream to its first batch, when a run
starts fresh and when it resumes at a late step.

    python bench/resume.py [--examples 200000] [--epoch 50] [--batch 256]

The split is `--examples` synthetic 8x8 grey images held in memory (a cheap source,
so the figure is the cost of positioning the stream, not of decoding), shuffled
with the default 10,000-example buffer; the late step is in the middle of epoch
`--epoch`. A stream that replays the run's history to resume pays for every
example of the epochs before it; one whose epoch order is a function of
(seed, host, epoch) pays for part of one epoch at most.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_EXAMPLES = flags.DEFINE_integer("examples", 200_000, "Examples in the synthetic split.")
_EPOCH = flags.DEFINE_integer("epoch", 50, "Epoch of the late step (resumed in its middle).")
_BATCH = flags.DEFINE_integer("batch", 256, "Global batch size.")


def seconds_to_first_batch(config, source, start_step: int) -> float:
    """Wall seconds from `train_iterator(start_step=...)` to its first batch."""
    from sslx.data import pipeline
    from sslx.data.spec import input_spec

    start = time.perf_counter()
    batches = pipeline.train_iterator(config, input_spec(config), inputs=("views", "label"),
                                      start_step=start_step, source=source)
    next(batches)
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    del argv
    import numpy as np
    import tensorflow as tf

    from sslx import config_defaults
    from sslx.data import sources

    tf.config.set_visible_devices([], "GPU")
    config = config_defaults.base_config()
    config.data.image_size = 8
    config.views.global_crops.size = 8
    config.train.batch_size = _BATCH.value
    images = np.zeros([_EXAMPLES.value, 8, 8], np.uint8)
    source = sources.from_arrays(images, np.zeros([_EXAMPLES.value], np.int32),
                                 process_index=0, process_count=1)
    steps_per_epoch = _EXAMPLES.value // _BATCH.value
    late = _EPOCH.value * steps_per_epoch + steps_per_epoch // 2
    result = {"examples": _EXAMPLES.value, "batch": _BATCH.value, "late_step": late,
              "fresh_s": round(seconds_to_first_batch(config, source, 0), 2),
              "resume_s": round(seconds_to_first_batch(config, source, late), 2)}
    print(json.dumps(result))
    print(f"first batch: {result['fresh_s']:.2f} s fresh, {result['resume_s']:.2f} s resuming "
          f"at step {late} (epoch {_EPOCH.value}, {_EXAMPLES.value} examples)")


if __name__ == "__main__":
    app.run(main)
