"""The resolved config of a run, saved as `WORKDIR/config.json`.

Every training run writes the config it runs with (after all command-line
overrides) before it starts, so resuming, exporting and `sslx.load` never need
the overrides typed again: `python -m sslx.main --workdir=DIR` without `--config`
uses this file (`get_config(workdir)` below is what `--config` then loads).

A re-run may change only what cannot affect the trained state (`FREE_FIELDS`:
logging, checkpoint cadence, evaluation, where the data lives); any other change
is refused, naming the field, so a workdir never mixes two recipes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import ml_collections

from sslx import fs
from sslx.config_defaults import base_config, view_group
from sslx.errors import CheckpointError

log = logging.getLogger("sslx")

FILENAME = "config.json"
# Dotted prefixes of the fields a re-run on the same workdir may change.
FREE_FIELDS = ("train.log_every", "checkpoint.every_steps", "checkpoint.keep", "eval",
               "evals", "data.path", "data.threads", "data.cache", "data.eval_split",
               "data.bad_images",
               # Where the state lives and whether activations are recomputed: the
               # same arithmetic on another slice (a resumed pod may be smaller).
               "mesh", "train.param_sharding", "train.fsdp_min_size", "train.fsdp_rules",
               "model.remat")


def path(workdir: str) -> str:
    return fs.join(workdir, FILENAME)


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"


def from_dict(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A locked ConfigDict equal to the one that was saved: JSON lists become the
    tuples the schema uses, and view groups get their per-crop fields back. Fields
    added to the schema's sections or to the method since the run was saved
    (`data.augment_on`, `supervised`'s `frozen_backbone`) read as their defaults, as
    `save` accepts them, so the run still builds. The open maps (`views`, `evals`)
    are taken as saved."""
    from sslx import methods  # here: methods import jax

    values = dict(values)
    name = values.get("method", {}).get("name")
    if name in methods.names():  # an unknown name fails where the method is built
        for section, fields in base_config(method=name).to_dict().items():
            if section not in ("views", "evals") and isinstance(values.get(section), dict):
                values[section] = {**fields, **values[section]}
    config = ml_collections.ConfigDict(_tuples(values))
    for name, group in values.get("views", {}).items():
        config.views[name] = view_group(**_tuples(group))
    config.lock()
    return config


def load(workdir: str) -> ml_collections.ConfigDict:
    """The config saved in `workdir`; `CheckpointError` if there is none."""
    saved = path(workdir)
    if not fs.exists(saved):
        raise CheckpointError(f"{saved} does not exist: {workdir} holds no sslx run; pass "
                              "--config=configs/RECIPE.py, or the --workdir of a trained run")
    return from_dict(fs.read_json(saved))


def get_config(workdir: str) -> ml_collections.ConfigDict:
    """`--config` for a run that reuses the saved config of `workdir`."""
    return load(workdir)


def save(config: ml_collections.ConfigDict, workdir: str, *, write: bool = True) -> None:
    """Writes the config (where `write`: process 0 of a multi-host run), first checking
    it against the one already in `workdir`: changes of `FREE_FIELDS` are logged, any
    other change raises `CheckpointError`."""
    saved = path(workdir)
    if fs.exists(saved):
        old, new = _flatten(fs.read_json(saved)), _flatten(_plain(config))
        defaults = _flatten(_plain(base_config(method=config.method.name)))
        # Fields the saved config lacks, at their defaults: added to sslx since that run
        # was saved (config.online_probe), they change nothing the run trained.
        added = {field for field, value in new.items()
                 if field not in old and field in defaults and value == defaults[field]}
        changes = [change for change in differences(old, new) if change[0] not in added]
        fixed = [change for change in changes if not _is_free(change[0])]
        fixed.sort(key=lambda change: change[0] != "method.name")  # the telling one first
        if fixed:
            field, old, new = fixed[0]
            raise CheckpointError(
                f"{workdir} was trained with config.{field}={old!r} (this run: {new!r}); "
                "use a new --workdir for this config, or drop the override to continue the run")
        for field, old, new in changes:
            log.info("config.%s changed since the last run: %r -> %r", field, old, new)
    if write:
        fs.makedirs(workdir)
        fs.write(saved, to_json(config))


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """`(field, old value, new value)` for every dotted field that differs."""
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


def _is_free(field: str) -> bool:
    return any(field == free or field.startswith(free + ".") for free in FREE_FIELDS)


def _plain(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as JSON would read it back (tuples as lists)."""
    return json.loads(to_json(config))


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
