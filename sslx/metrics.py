"""Training metrics: JSONL and TensorBoard scalars from process 0, and a progress line.

Every host computes the same (global) metrics; only process 0 writes them, so
a pod run produces one log, not one per host.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

log = logging.getLogger("sslx")


class MetricWriter:
    """Appends `{"step": s, name: value, ...}` lines to `workdir/metrics.jsonl` and the
    same scalars to TensorBoard under `workdir/tensorboard`."""

    def __init__(self, workdir: str, total_steps: int):
        self.total_steps = total_steps
        self.enabled = jax.process_index() == 0
        self._tty = sys.stderr.isatty()
        self._jsonl = None
        self._tensorboard = None
        if self.enabled:
            import tensorflow as tf

            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
            self._tensorboard = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        import tensorflow as tf

        values = {name: float(np.asarray(value)) for name, value in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        with self._tensorboard.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self._tensorboard.flush()
        self._progress(step, values)

    def _progress(self, step: int, values: Mapping[str, float]) -> None:
        shown = " ".join(f"{k}={_format(v)}" for k, v in values.items())
        line = f"step {step}/{self.total_steps} {shown}"
        if self._tty:
            sys.stderr.write("\r" + line[:200].ljust(120))
            sys.stderr.flush()
        else:
            log.info(line)

    def close(self) -> None:
        if self.enabled:
            if self._tty:
                sys.stderr.write("\n")
            self._jsonl.close()
            self._tensorboard.close()


def _format(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


class Throughput:
    """Images/s and seconds/step between two log points, excluding compile time
    (the first interval starts after the first step)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self._time = None
        self._step = 0

    def start(self, step: int) -> None:
        self._time, self._step = time.perf_counter(), step

    def measure(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps = step - self._step
        if self._time is None or steps <= 0:
            return {}
        elapsed = now - self._time
        self._time, self._step = now, step
        return {"images_per_sec": steps * self.batch_size / elapsed, "step_time": elapsed / steps}
