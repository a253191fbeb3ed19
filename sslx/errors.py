"""Errors a user can act on: each message names the thing that is wrong and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SslxError(Exception):
    """Base of the errors sslx raises for bad input."""


class ConfigError(SslxError, ValueError):
    """A config field has an impossible value or an unknown name."""


class DataError(SslxError, ValueError):
    """A data path, split, image or array cannot be used."""


class CheckpointError(SslxError, RuntimeError):
    """A checkpoint in the workdir does not match the configured run."""


def close_matches(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean: a, b?)' for the candidates closest to `name`, or ''."""
    matches = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return f" (did you mean: {', '.join(matches)}?)" if matches else ""
