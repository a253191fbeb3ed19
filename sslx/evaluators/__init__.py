"""Evaluators, registered by type: an evaluator is a class in this package that
subclasses `sslx.evaluators.base.Evaluator` and is decorated with
`@register("type", defaults=DEFAULTS)`; every module here is imported on first
lookup, so adding one needs no edit anywhere else.

A run's evaluators are the sections of `config.evals`, `{name: {type, every_steps,
enabled, ...}}` (big_vision style): `type` picks the class, `every_steps` when
the loop calls it during training (0 or negative: only at the end; it always
runs at the end), `enabled=False` turns it off, and the other fields are those
its type declares in `defaults` (missing ones take those values)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from sslx.errors import ConfigError, close_matches
from sslx.evaluators.base import Evaluator
from sslx.plugins import Registry

# Fields every section of `config.evals` has, whatever its type.
COMMON_FIELDS = ("type", "every_steps", "enabled")

_EVALUATORS = Registry("evaluator type", __name__, __path__)


def register(name: str, *, defaults: Mapping[str, Any]):
    """Class decorator that makes an `Evaluator` selectable as `config.evals.X.type`,
    with the fields of its section and their default values."""
    clash = set(COMMON_FIELDS) & set(defaults)
    if clash:
        raise ValueError(f"defaults of evaluator {name!r}: {sorted(clash)} are common fields")
    return _EVALUATORS.register(name, defaults)


def names() -> list[str]:
    """All registered evaluator types."""
    return _EVALUATORS.names()


def default_config(type_name: str, *, every_steps: int = 0,
                   enabled: bool = True) -> ml_collections.ConfigDict:
    """A `config.evals` section of `type_name` with its registered defaults (locked,
    so a misspelt field fails where it is set)."""
    _EVALUATORS.lookup(type_name, "type")
    section = ml_collections.ConfigDict({"type": type_name, "every_steps": every_steps,
                                         "enabled": enabled, **_EVALUATORS.defaults(type_name)})
    section.lock()
    return section


def build(name: str, section: ml_collections.ConfigDict, run: Any) -> Evaluator:
    """The evaluator `config.evals.<name>` for `run`: its type's defaults under the
    section's fields; `ConfigError` for an unknown type or field."""
    where = f"config.evals.{name}"
    if "type" not in section:
        raise ConfigError(f"{where} has no type; set {where}.type to one of "
                          f"{', '.join(names())}")
    cls = _EVALUATORS.lookup(section.type, f"{where}.type")
    declared = _EVALUATORS.defaults(section.type)
    unknown = sorted(set(section.keys()) - set(declared) - set(COMMON_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where} has {', '.join(unknown)}, which evaluator type {section.type!r} does "
            f"not read{close_matches(unknown[0], [*declared, *COMMON_FIELDS])}; its fields: "
            f"{', '.join([*COMMON_FIELDS, *declared])}")
    fields = {"every_steps": 0, "enabled": True, **declared, **section.to_dict()}
    if not isinstance(fields["every_steps"], int):
        raise ConfigError(f"{where}.every_steps={fields['every_steps']!r} must be an integer "
                          "(0 or negative: only at the end of training)")
    config = ml_collections.ConfigDict(fields)
    config.lock()
    return cls(name, config, run)


def build_all(run: Any) -> dict[str, Evaluator]:
    """The enabled evaluators of `run.config.evals`, by name, in name order."""
    evals = run.config.evals
    return {name: build(name, evals[name], run) for name in sorted(evals.keys())
            if evals[name].get("enabled", True)}


def build_named(run: Any, selected: Sequence[str]) -> dict[str, Evaluator]:
    """The evaluators `selected`, in that order, enabled or not: each the section of
    `run.config.evals` by that name or, where there is none (a run saved before
    the type existed), an evaluator type of that name with its defaults."""
    evals = run.config.evals
    built = {}
    for name in selected:
        if name in evals:
            built[name] = build(name, evals[name], run)
        elif name in names():
            built[name] = build(name, default_config(name), run)
        else:
            raise ConfigError(
                f"--evals names {name!r}, which is neither a section of config.evals "
                f"({', '.join(sorted(evals.keys())) or 'none'}) nor an evaluator type "
                f"({', '.join(names())}){close_matches(name, [*evals.keys(), *names()])}")
    return built


__all__ = ["COMMON_FIELDS", "Evaluator", "build", "build_all", "build_named", "default_config",
           "names", "register"]
