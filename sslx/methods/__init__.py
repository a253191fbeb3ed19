"""Methods, registered by name: a method is one file in this package that
decorates its class with `@register("name")`; every module here is imported on
first lookup, so adding a method needs no edit anywhere else."""

from __future__ import annotations

import importlib
import pkgutil

import ml_collections

from sslx.errors import ConfigError, close_matches
from sslx.methods.base import Method, TrainLength

_REGISTRY: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator that makes a `Method` selectable as `config.method.name`."""

    def add(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls

    return add


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def names() -> list[str]:
    """All registered method names."""
    _import_all()
    return sorted(_REGISTRY)


def build(config: ml_collections.ConfigDict, length: TrainLength) -> Method:
    """The method `config.method.name`, constructed for this run."""
    _import_all()
    name = config.method.name
    if name not in _REGISTRY:
        raise ConfigError(
            f"config.method.name={name!r} is not a method{close_matches(name, _REGISTRY)}; "
            f"available: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name](config, length)


__all__ = ["Method", "TrainLength", "build", "names", "register"]
