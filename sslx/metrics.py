"""Training metrics: JSONL and TensorBoard scalars from process 0, and progress.

Every host computes the same (global) metrics; only process 0 writes them, so
a pod run produces one log, not one per host. Files go through `sslx.fs`, so a
`gs://` workdir receives them. Progress is a tqdm bar on a terminal (epoch,
step/total, images/s, ETA) and a plain log line per logged step otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
import tensorflow as tf
import tqdm

from sslx import fs
from sslx.errors import SslxError

log = logging.getLogger("sslx")

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    """File-system failures of the writers as one `SslxError` naming the path."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        reason = getattr(error, "message", None) or str(error)
        raise SslxError(f"cannot write metrics to {path}: {reason}; check that --workdir is "
                        "writable (permissions, bucket, credentials, free space)") from None


class MetricWriter:
    """Appends `{"step": s, name: value, ...}` lines to `workdir/metrics.jsonl` and the
    same scalars to TensorBoard under `workdir/tensorboard`."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self._jsonl_path = fs.join(workdir, METRICS_FILE)
        self._tensorboard = None
        if self.enabled:
            with _writing(workdir):
                fs.makedirs(workdir)
                self._tensorboard = tf.summary.create_file_writer(
                    fs.join(workdir, TENSORBOARD_DIR))

    def write(self, step: int, scalars: Mapping[str, Any]) -> dict[str, float]:
        """Writes the scalars of `step`; returns them as floats."""
        values = {name: float(np.asarray(value)) for name, value in scalars.items()}
        if not self.enabled:
            return values
        with _writing(self._jsonl_path):
            with fs.open_file(self._jsonl_path, "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
            with self._tensorboard.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(name, value)
            self._tensorboard.flush()
        return values

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


class Progress:
    """A tqdm bar on a terminal, log lines elsewhere; both show the epoch, the step
    out of the total, images/s and the time left."""

    def __init__(self, total_steps: int, steps_per_epoch: int, start_step: int):
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self._start = (time.perf_counter(), start_step)
        self._bar = None
        if jax.process_index() == 0 and sys.stderr.isatty():
            self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                                  dynamic_ncols=True, file=sys.stderr)

    def started(self, step: int) -> None:
        """Restarts the clock after `step` (the first step compiles: no ETA from it)."""
        self._start = (time.perf_counter(), step)

    def step(self, step: int) -> None:
        """Called after every step: moves the bar."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_description(f"epoch {self._epoch(step)}", refresh=False)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Called at logged steps: the metrics beside the bar, or one log line."""
        shown = {k: _format(v) for k, v in values.items() if k not in ("step_time",)}
        if self._bar is not None:
            self._bar.set_postfix(shown, refresh=True)
            return
        if jax.process_index() == 0:
            fields = " ".join(f"{k}={v}" for k, v in shown.items())
            log.info("epoch %s step %d/%d %s eta %s", self._epoch(step), step,
                     self.total_steps, fields, self._eta(step))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _epoch(self, step: int) -> str:
        return f"{step / self.steps_per_epoch:.2f}"

    def _eta(self, step: int) -> str:
        started, first = self._start
        done = step - first
        if done <= 0:
            return "?"
        seconds = (time.perf_counter() - started) / done * (self.total_steps - step)
        return tqdm.tqdm.format_interval(seconds)


def _format(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


class Throughput:
    """Images/s and seconds/step between two log points, excluding compile time
    (the first interval starts after the first step), and `input_wait`: the share
    of that time the loop spent waiting for the input pipeline's next batch (near
    0 when the step is the bottleneck, near 1 when the input starves it)."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self._time = None
        self._step = 0
        self._waited = 0.0

    def start(self, step: int) -> None:
        self._time, self._step, self._waited = time.perf_counter(), step, 0.0

    def waited(self, seconds: float) -> None:
        """Counts `seconds` spent blocked on the next batch."""
        self._waited += seconds

    def measure(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps = step - self._step
        if self._time is None or steps <= 0:
            return {}
        elapsed, waited = now - self._time, self._waited
        self._time, self._step, self._waited = now, step, 0.0
        return {"images_per_sec": steps * self.batch_size / elapsed, "step_time": elapsed / steps,
                "input_wait": waited / elapsed}
