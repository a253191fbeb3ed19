"""Preemption notices: SIGTERM ends a run at the next step boundary, after a checkpoint.

Cloud TPU, GKE and SLURM send SIGTERM some seconds before they stop a job. The
training loop asks `PreemptionNotice.reached(step)` after every step; when it
answers True the loop saves that step's checkpoint, waits for it to commit and
returns, so the process exits 0 and re-running the same command resumes with
nothing lost.

In a multi-process run the hosts must agree on the step, or one would save a
checkpoint the others never write: there JAX's preemption sync manager (started
by `jax.distributed.initialize`, which installs its own SIGTERM handler) spreads
the notice and names the first step every host can still reach. A single
process needs no agreement and keeps a flag set by a Python signal handler.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils


class PreemptionNotice:
    """A context manager that listens for SIGTERM while a run trains."""

    def __init__(self):
        self._received = False
        self._previous_handler = None
        self._shared = jax.process_count() > 1

    def __enter__(self) -> PreemptionNotice:
        # Python runs signal handlers in the main thread only; a run driven from
        # another thread (a notebook's worker, say) keeps the default behaviour.
        if not self._shared and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame  # only a flag: the loop acts on it at the step boundary
        self._received = True

    def reached(self, step: int) -> bool:
        """Whether the run must save `step` and stop. Called after every step, by
        every host, with the same steps (the sync manager's contract)."""
        if self._shared:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._received
