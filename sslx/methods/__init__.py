"""Methods, registered by name: a method is one file in this package that
decorates its class with `@register("name", defaults=DEFAULTS)`; every module
here is imported on first lookup, so adding a method needs no edit anywhere else.

`defaults` are the method's `config.method` fields, every one it reads, with
the values of its published recipe. `config_defaults.base_config(method=name)`
starts a recipe from them, and `build` refuses a `config.method` whose fields
are not exactly those (a `--config.method.name` switched to another method)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ml_collections

from sslx.errors import ConfigError
from sslx.methods.base import Method, TrainLength
from sslx.plugins import Registry

if TYPE_CHECKING:
    from sslx.data.spec import InputSpec

_METHODS = Registry("method", __name__, __path__, skip=("base",))


def register(name: str, *, defaults: Mapping[str, Any]):
    """Class decorator that makes a `Method` selectable as `config.method.name`,
    with its `config.method` fields and their default values."""
    if "name" in defaults:
        raise ValueError(f"defaults of method {name!r}: 'name' is the registered name")
    return _METHODS.register(name, defaults)


def lookup(name: str) -> type[Method]:
    """The `Method` class registered as `name`."""
    return _METHODS.lookup(name, "config.method.name")


def names() -> list[str]:
    """All registered method names."""
    return _METHODS.names()


def default_config(name: str) -> ml_collections.ConfigDict:
    """`config.method` of method `name` with its registered defaults."""
    lookup(name)
    return ml_collections.ConfigDict({"name": name, **_METHODS.defaults(name)})


def check_fields(method: ml_collections.ConfigDict) -> None:
    """`ConfigError` unless `method` has exactly the fields its method declares."""
    name = method.name
    lookup(name)
    declared, present = set(_METHODS.defaults(name)), set(method.keys()) - {"name"}
    missing, unknown = sorted(declared - present), sorted(present - declared)
    if missing or unknown:
        problems = [f"lacks {', '.join(missing)}"] if missing else []
        problems += [f"has {', '.join(unknown)}, which {name} does not read"] if unknown else []
        raise ConfigError(
            f"config.method.name={name!r}, but config.method {' and '.join(problems)}. A "
            "recipe selects its method with base_config(method=...), which brings that "
            "method's fields; --config.method.name cannot switch a recipe to another "
            f"method: use a recipe of {name} (configs/{name}_*.py)")


def build(config: ml_collections.ConfigDict, length: TrainLength,
          spec: InputSpec | None = None) -> Method:
    """The method `config.method.name`, constructed for this run from its own
    section `config.method`, the backbone's `config.model`, the input `spec`
    (parsed from `config` when not given) and the compute dtype: a method
    never reads the rest of the config."""
    from sslx.data.spec import input_spec

    cls = lookup(config.method.name)
    check_fields(config.method)
    return cls(config.method, model=config.model, spec=spec or input_spec(config),
               length=length, dtype=config.train.dtype)


__all__ = ["Method", "TrainLength", "build", "check_fields", "default_config", "lookup", "names",
           "register"]
