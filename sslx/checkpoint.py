"""Orbax checkpoints of the whole train state, resumed automatically from the workdir.

A checkpoint holds the train state (params, optimizer state, method state,
step, rng) and a small JSON description of the model and method. The
description is checked before any array is read, so a workdir trained with
another model fails with a message instead of a shape error, and nothing in
the workdir is ever overwritten by a run that could not restore it.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from sslx import fs
from sslx.errors import CheckpointError, ConfigError

CHECKPOINT_SUBDIR = "checkpoints"
# File systems orbax (through tensorstore) writes checkpoints to; '' is local.
CHECKPOINT_SCHEMES = ("", "gs", "s3")


def checkpoint_directory(config: ml_collections.ConfigDict, workdir: str) -> str:
    """`config.checkpoint.directory`, by default `WORKDIR/checkpoints`."""
    directory = config.checkpoint.directory or fs.join(workdir, CHECKPOINT_SUBDIR)
    if fs.scheme(directory) not in CHECKPOINT_SCHEMES:
        raise ConfigError(
            f"checkpoints cannot be written to {directory}: orbax writes local, gs:// and "
            "s3:// directories; set --config.checkpoint.directory to one of those")
    return directory


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What must match for a checkpoint to be restorable into this run."""
    return json.loads(json.dumps({
        "method": {"name": config.method.name},
        "model": config.model.to_dict(),
    }))


class Checkpointer:
    """Async orbax saves every `every_steps`, keeping the newest `keep`."""

    def __init__(self, directory: str, every_steps: int, keep: int):
        self.directory = directory
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=every_steps, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, description: dict[str, Any], *,
             force: bool = False) -> bool:
        """Starts an async save if `step` is due (or `force`); returns whether it did."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(description)),
            force=force,
        )

    def restore(self, abstract_state: Any, description: dict[str, Any]) -> Any:
        """The latest state, laid out as `abstract_state` (shapes, dtypes, shardings)."""
        step = self.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        saved = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        if saved.meta != description:
            raise CheckpointError(
                f"the checkpoint at step {step} in {self.directory} was trained with "
                f"{_difference(saved.meta, description)}; use a new --workdir for this config "
                "or the config the checkpoint was trained with")
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"the checkpoint at step {step} in {self.directory} does not fit this run's "
                f"train state ({error}); use a new --workdir or the original config") from error
        return restored.state

    def wait(self) -> None:
        """Blocks until async saves are on disk (call before exiting)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def _difference(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "config") -> str:
    for key in sorted(set(saved) | set(wanted)):
        old, new = saved.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            if old != new:
                return _difference(old, new, f"{prefix}.{key}")
        elif old != new:
            return f"{prefix}.{key}={old!r} (this run: {new!r})"
    return "a different description"
