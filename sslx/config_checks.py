"""Checks of the run-level config fields, before anything is built or compiled.

Each module checks its own fields where it reads them (data sources, views,
optimizer, models, methods); here are the fields of the loop itself. Every
message names the field and what would fix it.
"""

from __future__ import annotations

import ml_collections

from sslx.errors import ConfigError, close_matches

_CHOICES = {
    "train.dtype": ("float32", "bfloat16"),
    "train.param_sharding": ("replicated", "fsdp"),
}


def check_run(config: ml_collections.ConfigDict, *, num_devices: int, process_count: int) -> None:
    """Raises `ConfigError` for the first impossible run-level setting."""
    for field, choices in _CHOICES.items():
        value = _get(config, field)
        if value not in choices:
            raise ConfigError(f"config.{field}={value!r} is not one of {', '.join(choices)}"
                              f"{close_matches(str(value), choices)}")
    train = config.train
    _positive(config, "train.batch_size")
    if train.batch_size % num_devices:
        raise ConfigError(
            f"config.train.batch_size={train.batch_size} is not divisible by the "
            f"{num_devices} devices; use a multiple of {num_devices}")
    if train.batch_size % process_count:
        raise ConfigError(
            f"config.train.batch_size={train.batch_size} is not divisible by the "
            f"{process_count} processes; use a multiple of {process_count}")
    if train.steps <= 0:
        _positive(config, "train.epochs")
    for field in ("train.log_every", "checkpoint.every_steps", "checkpoint.keep",
                  "eval.batch_size"):
        _positive(config, field)
    if config.eval.batch_size % num_devices:
        raise ConfigError(
            f"config.eval.batch_size={config.eval.batch_size} is not divisible by the "
            f"{num_devices} devices; use a multiple of {num_devices}")
    for name, group in config.views.items():
        if group.size > config.data.image_size:
            raise ConfigError(
                f"config.views.{name}.size={group.size} is larger than the images "
                f"(config.data.image_size={config.data.image_size}); use a crop size of at "
                f"most {config.data.image_size}")


def _get(config: ml_collections.ConfigDict, field: str):
    value = config
    for part in field.split("."):
        value = value[part]
    return value


def _positive(config: ml_collections.ConfigDict, field: str) -> None:
    value = _get(config, field)
    if not value > 0:
        raise ConfigError(f"config.{field}={value!r} must be > 0")
