"""Orbax checkpoints of the whole train state, resumed automatically from the workdir.

A checkpoint holds the train state (params, optimizer state, method state,
step, rng) and a small JSON description of the model and method. The
description is checked before any array is read, so a workdir trained with
another model fails with a message instead of a shape error, and nothing in
the workdir is ever overwritten by a run that could not restore it.

Another run's checkpoint (`config.init.checkpoint`) is read without this run's
structure (`SavedRun`): its leaves are matched by path and shape with this
run's (`plan_init`), and only those are read, as numpy, and laid over a fresh
state (`overlay`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from sslx import fs
from sslx.errors import CheckpointError, ConfigError, close_matches

log = logging.getLogger("sslx")

CHECKPOINT_SUBDIR = "checkpoints"
# File systems orbax (through tensorstore) writes checkpoints to; '' is local.
CHECKPOINT_SCHEMES = ("", "gs", "s3")
# The file orbax writes into a step's directory once everything else is on disk.
COMMIT_MARKER = "commit_success.txt"


def checkpoint_directory(config: ml_collections.ConfigDict, workdir: str) -> str:
    """`config.checkpoint.directory`, by default `WORKDIR/checkpoints`."""
    directory = config.checkpoint.directory or fs.join(workdir, CHECKPOINT_SUBDIR)
    if fs.scheme(directory) not in CHECKPOINT_SCHEMES:
        raise ConfigError(
            f"checkpoints cannot be written to {directory}: orbax writes local, gs:// and "
            "s3:// directories; set --config.checkpoint.directory to one of those")
    return directory


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What must match for a checkpoint to be restorable into this run: the method and
    the model, less what leaves the parameters as they are (`remat`) and `scan` where
    off, so checkpoints saved before those fields existed still match."""
    model = config.model.to_dict()
    model.pop("remat", None)
    if not model.get("scan", True):
        model.pop("scan")
    return json.loads(json.dumps({"method": {"name": config.method.name}, "model": model}))


@functools.cache
def _save_replicas_whole_on_cpu() -> None:
    """On the CPU backend device memory is host memory, so orbax's replica-parallel
    save (each replica writes a slice of a replicated array) gains nothing and
    costs one dispatched slice per array and replica: with 8 devices, thousands
    per save. There, replicated arrays are written whole, by their first replica.
    Once per process; orbax's warning that the default handler is replaced is
    silenced (this is the intent)."""
    if jax.default_backend() != "cpu":
        return
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
            override=True)
    finally:
        absl_logger.setLevel(level)


class Checkpointer:
    """Async orbax saves every `every_steps`, keeping the newest `keep`."""

    def __init__(self, directory: str, every_steps: int, keep: int):
        _save_replicas_whole_on_cpu()
        self.directory = directory
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=every_steps, create=True),
        )

    def latest_step(self) -> int | None:
        """The newest committed step. Newer steps whose save was cut short (no commit
        marker) are removed, with a warning: they hold no usable state, and the run
        that resumes will save those steps again."""
        for step in _uncommitted_steps(self._manager):
            log.warning("checkpoint %s/%d was never committed (its save was cut short): "
                        "removed; resuming from the previous one", self.directory, step)
            self._manager.delete(step)
        return _latest_committed_step(self._manager)

    def due(self, step: int) -> bool:
        """Whether `save(step, ...)` would save (every `every_steps`)."""
        return self._manager.should_save(step)

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
            raise CheckpointError(f"no checkpoint in {self.directory}: the run has not saved "
                                  "one yet; train it first with the same --workdir")
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


def _committed(manager: ocp.CheckpointManager, step: int) -> bool:
    """Whether orbax finished writing `step`: it writes the commit marker last."""
    return (manager.directory / str(step) / COMMIT_MARKER).exists()


def _uncommitted_steps(manager: ocp.CheckpointManager) -> list[int]:
    """The steps newer than every committed step that lack their commit marker."""
    uncommitted = []
    for step in sorted(manager.all_steps(), reverse=True):
        if _committed(manager, step):
            break
        uncommitted.append(step)
    return uncommitted


def _latest_committed_step(manager: ocp.CheckpointManager) -> int | None:
    return next((step for step in sorted(manager.all_steps(), reverse=True)
                 if _committed(manager, step)), None)


def _difference(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "config") -> str:
    for key in sorted(set(saved) | set(wanted)):
        old, new = saved.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            if old != new:
                return _difference(old, new, f"{prefix}.{key}")
        elif old != new:
            return f"{prefix}.{key}={old!r} (this run: {new!r})"
    return "a different description"


# Another run's weights (`config.init`): its checkpoint is read without this run's
# structure, as plain numpy arrays, and the leaves that fit are put into a fresh state.

INIT_PARTS = ("backbone", "all")
# The parts of the train state `config.init` fills; the optimizer state, step and
# rng of the new run stay fresh.
INIT_FIELDS = ("params", "method_state")

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One array of a saved train state: where it is, its shape and dtype."""

    path: Path
    shape: tuple[int, ...]
    dtype: Any


def path_names(keypath: Sequence[Any]) -> Path:
    """A jax key path as plain names: `.params['backbone'][0]` -> ('params', 'backbone', '0')."""
    names = []
    for key in keypath:
        for attribute in ("name", "key", "idx"):
            if hasattr(key, attribute):
                names.append(str(getattr(key, attribute)))
                break
        else:
            names.append(str(key))
    return tuple(names)


def show(path: Path) -> str:
    return "/".join(path)


class SavedRun:
    """The checkpoint of another run that `config.init.checkpoint` names: a workdir
    (its latest checkpoint), a checkpoint directory (its latest step) or one
    step's directory. `leaves` mirrors the saved train state with a `Leaf` per
    array (read from the checkpoint's metadata, no array is read); `read` loads
    the arrays asked for, as numpy, on every host."""

    def __init__(self, path: str):
        self.path = path
        self.directory, step = _locate(path)
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(read_only=True, create=False))
        self.step = _latest_committed_step(self._manager) if step is None else step
        if self.step is None:
            raise CheckpointError(f"config.init.checkpoint={path!r} holds no checkpoint "
                                  f"({self.directory} has no saved step); point it to the "
                                  "workdir of a run that has saved one")
        try:
            metadata = self._manager.item_metadata(self.step)["state"]
            self.description = self._manager.restore(
                self.step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except (FileNotFoundError, KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"config.init.checkpoint={path!r}: step {self.step} in "
                                  f"{self.directory} is not an sslx checkpoint ({error})"
                                  ) from error
        tree = getattr(metadata, "tree", metadata)
        self.leaves = _leaves(tree, ())

    def read(self, paths: Sequence[Path]) -> dict[Path, np.ndarray]:
        """The arrays at `paths`, as numpy (the rest of the checkpoint is not read)."""
        if not paths:
            return {}
        item = _subtree(self.leaves, [tuple(p) for p in paths])
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item,
                                    is_leaf=_is_leaf)
        item = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), item,
                            is_leaf=_is_leaf)
        restored = self._manager.restore(self.step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                         partial_restore=True))).state
        return {path: np.asarray(_get(restored, path)) for path in paths}

    def close(self) -> None:
        self._manager.close()


@dataclasses.dataclass
class InitPlan:
    """Which saved leaf fills which leaf of the new state, and what was left fresh."""

    taken: dict[Path, Leaf]  # this run's leaf -> the saved leaf that fills it
    considered: int  # leaves of this run that `parts` asks for
    not_taken: list[str]  # "path (why)" of those left freshly initialised


def plan_init(abstract_state: Any, saved: Any, parts: str,
              backbone: dict[str, Any] | None = None) -> InitPlan:
    """Matches the leaves of this run's `params` and `method_state` with the saved
    leaves (`SavedRun.leaves`).

    parts='all': every leaf whose path and shape match. parts='backbone': every
    leaf of this run under a `backbone` module (the network's, and copies of it
    such as EMA teachers) takes the same leaf of the saved `backbone`
    (`{'params': ..., 'batch_stats': ...}` of `Leaf`s, the backbone the other run
    embeds with), from `batch_stats` where the path names batch statistics."""
    if parts not in INIT_PARTS:
        raise ConfigError(f"config.init.parts={parts!r} is not one of {', '.join(INIT_PARTS)}"
                          f"{close_matches(str(parts), INIT_PARTS)}")
    by_path = {leaf.path: leaf for leaf in jax.tree.leaves(saved, is_leaf=_is_leaf)}
    collections = {name: {path_names(keypath): leaf for keypath, leaf in
                          jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_leaf)[0]}
                   for name, tree in (backbone or {}).items()}
    plan = InitPlan({}, 0, [])
    for keypath, target in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
        path = path_names(keypath)
        if path[0] not in INIT_FIELDS:
            continue
        if parts == "all":
            source = by_path.get(path)
        elif "backbone" in path:
            at = path.index("backbone")
            collection = "batch_stats" if "batch_stats" in path[:at] else "params"
            source = collections.get(collection, {}).get(path[at + 1:])
        else:
            continue
        plan.considered += 1
        if source is None:
            plan.not_taken.append(f"{show(path)} (not in the checkpoint)")
        elif tuple(source.shape) != tuple(target.shape):
            plan.not_taken.append(f"{show(path)} (shape {tuple(target.shape)}, saved "
                                  f"{tuple(source.shape)} at {show(source.path)})")
        else:
            plan.taken[path] = source
    return plan


def overlay(state: Any, abstract_state: Any, values: dict[Path, np.ndarray]) -> Any:
    """`state` with the leaves at the paths of `values` replaced by those arrays, in
    the dtype and sharding of `abstract_state` (on every host, from its own copy)."""

    def put(keypath, leaf, target):
        value = values.get(path_names(keypath))
        if value is None:
            return leaf
        value = np.asarray(value, target.dtype)
        return jax.make_array_from_callback(target.shape, target.sharding,
                                            lambda index: value[index])

    return jax.tree_util.tree_map_with_path(put, state, abstract_state)


def _locate(path: str) -> tuple[str, int | None]:
    """`(checkpoint directory, step or None for the latest)` of `path`."""
    from sslx import saved_config  # imports the config schema

    if not path or not fs.exists(path):
        raise CheckpointError(f"config.init.checkpoint={path!r} does not exist; set it to the "
                              "workdir (or checkpoint directory) of the run to start from")
    saved = saved_config.path(path)
    if fs.exists(saved):
        directory = fs.read_json(saved).get("checkpoint", {}).get("directory", "")
        return directory or fs.join(path, CHECKPOINT_SUBDIR), None
    if fs.exists(fs.join(path, CHECKPOINT_SUBDIR)):
        return fs.join(path, CHECKPOINT_SUBDIR), None
    base = path.rstrip("/").rsplit("/", 1)
    if len(base) == 2 and base[1].isdigit() and fs.exists(fs.join(path, "state")):
        return base[0], int(base[1])
    return path, None


def _leaves(tree: Any, path: Path) -> Any:
    """The saved state's metadata with a `Leaf` for each array (other leaves dropped)."""
    if isinstance(tree, Mapping):
        children = {str(k): _leaves(v, (*path, str(k))) for k, v in tree.items()}
        return {k: v for k, v in children.items() if v is not None}
    if isinstance(tree, (list, tuple)):
        return [_leaves(v, (*path, str(i))) for i, v in enumerate(tree)]
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        return Leaf(path, tuple(tree.shape), np.dtype(tree.dtype))
    return None


def _subtree(tree: Any, paths: list[Path]) -> Any:
    """The part of `tree` that holds `paths` (lists are kept whole: orbax restores
    a part of a dict, not of a list)."""
    if not isinstance(tree, Mapping):
        return tree
    heads: dict[str, list[Path]] = {}
    for path in paths:
        heads.setdefault(path[0], []).append(path[1:])
    return {head: (tree[head] if not all(rest) else _subtree(tree[head], rest))
            for head, rest in heads.items()}


def _get(tree: Any, path: Path) -> Any:
    for name in path:
        tree = tree[int(name)] if isinstance(tree, (list, tuple)) else tree[name]
    return tree


def _is_leaf(x: Any) -> bool:
    return isinstance(x, Leaf)
