"""A registry of classes by name, each with its config defaults, filled by the
modules of one package: the methods (`config.method.name`) and the evaluators
(`config.evals.X.type`). A module registers its class with a decorator and is
imported on first lookup, so adding one needs no edit anywhere else."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any

from sslx.errors import ConfigError, close_matches


class Registry:
    """Classes of one `kind` ("method", "evaluator type") registered by name from the
    modules of `package` (its `__name__` and `__path__`), except `skip`."""

    def __init__(self, kind: str, package: str, path: list[str], skip: tuple[str, ...] = ()):
        self.kind = kind
        self._package, self._path, self._skip = package, path, skip
        self._classes: dict[str, type] = {}
        self._defaults: dict[str, dict[str, Any]] = {}

    def register(self, name: str, defaults: Mapping[str, Any]) -> Callable[[type], type]:
        """Class decorator: `name` selects the class; `defaults` are its config fields."""

        def add(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._classes[name] = cls
            self._defaults[name] = dict(defaults)
            return cls

        return add

    def _import_all(self) -> None:
        for module in pkgutil.iter_modules(self._path):
            if module.name not in self._skip:
                importlib.import_module(f"{self._package}.{module.name}")

    def lookup(self, name: str, where: str) -> type:
        """The class registered as `name`; imports only its module where the file is
        named after it (what `base_config` needs), else all. `ConfigError` naming
        `where` (the config field) and the close names for an unknown one."""
        if name not in self._classes:
            if any(module.name == name for module in pkgutil.iter_modules(self._path)):
                importlib.import_module(f"{self._package}.{name}")
            if name not in self._classes:
                self._import_all()
        if name not in self._classes:
            article = "an" if self.kind[0] in "aeiou" else "a"
            raise ConfigError(
                f"{where}={name!r} is not {article} {self.kind}"
                f"{close_matches(name, self._classes)}; "
                f"available: {', '.join(sorted(self._classes))}")
        return self._classes[name]

    def defaults(self, name: str) -> dict[str, Any]:
        """The config fields `name` registered, with their default values."""
        return self._defaults[name]

    def names(self) -> list[str]:
        """Every registered name."""
        self._import_all()
        return sorted(self._classes)
