"""Checks of the run-level config fields, before anything is built or compiled.

Each module checks its own fields where it reads them (data sources, views,
optimizer, models, methods); here are the fields of the loop itself. Every
message names the field and what would fix it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import ml_collections

from sslx.errors import ConfigError, close_matches

MESH_AXES = ("data", "fsdp")  # the axes config.mesh may name (sslx.sharding)
_MESH_EXAMPLE = "e.g. --config.mesh='((\"data\",-1),(\"fsdp\",2))'"

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
    # A config saved before the mesh fields existed reads as their defaults.
    mesh_shape(config.get("mesh", (("data", -1),)), num_devices=None)
    if not config.train.get("fsdp_min_size", 1) > 0:
        _positive(config, "train.fsdp_min_size")
    for rule in config.train.get("fsdp_rules", ()):
        _regex(rule, "train.fsdp_rules")
    _check_scanned_blocks(config)
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
    _check_accumulation(config, num_devices)
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
                f"(config.data.image_size={config.data.image_size}): set "
                f"config.views.{name}.size to at most {config.data.image_size}, or "
                "config.data.image_size to the images' real side if they are larger")


# Backbone families that normalise over the batch: every ResNet block has BatchNorm
# (sslx.models.resnet), so the statistics of a microbatch are not the batch's.
_BATCH_NORM_BACKBONES = ("resnet",)


def _check_accumulation(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """`config.train.accumulation_steps` k > 1 splits each device's share of the batch
    into k microbatches (`sslx.train.make_train_step`): refused where the share does
    not split evenly, and where the averaged microbatch gradients would not be the
    batch's (`Method.batch_level_loss`, a backbone with BatchNorm). A config saved
    before the field existed reads as 1."""
    steps = config.train.get("accumulation_steps", 1)
    if not (isinstance(steps, int) and steps >= 1):
        raise ConfigError(f"config.train.accumulation_steps={steps!r} must be an integer >= 1 "
                          "(1: no accumulation)")
    if steps == 1:
        return
    batch = config.train.batch_size
    if batch % (steps * num_devices):
        raise ConfigError(
            f"config.train.accumulation_steps={steps}: the {batch // num_devices} images of "
            f"each of the {num_devices} devices (config.train.batch_size={batch}) do not "
            f"split into {steps} microbatches; make config.train.batch_size a multiple of "
            f"{steps * num_devices}, or accumulation_steps a divisor of {batch // num_devices}")
    from sslx import methods  # here: methods import jax and flax

    name = config.method.name
    reason = methods.lookup(name).batch_level_loss
    if reason is None and config.model.name.startswith(_BATCH_NORM_BACKBONES):
        reason = (f"runs on config.model.name={config.model.name!r}, whose BatchNorm "
                  "normalises over the batch")
    if reason is not None:
        raise ConfigError(
            f"config.train.accumulation_steps={steps}: method {name!r} {reason}, so "
            "accumulating microbatches would change its objective; use "
            "accumulation_steps=1 (or a larger slice)")


def mesh_shape(axes: Sequence[Sequence[Any]], num_devices: int | None
               ) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(axis names, sizes) of `config.mesh` on `num_devices` devices, -1 resolved;
    `ConfigError` naming the field before anything compiles. With `num_devices`
    None only the form is checked (a run given its own mesh, such as `sslx.load`
    on another machine, does not use the sizes). Lists are taken as tuples: that is
    how the saved config's JSON reads them back."""
    pairs = list(axes) if isinstance(axes, (tuple, list)) else []
    if not pairs or any(not isinstance(pair, (tuple, list)) or len(pair) != 2
                        for pair in pairs):
        raise ConfigError(f"config.mesh={axes!r} is not a tuple of (axis name, size) pairs; "
                          f"{_MESH_EXAMPLE}")
    names = tuple(name for name, _ in pairs)
    for name in names:
        if name not in MESH_AXES:
            raise ConfigError(f"config.mesh names the axis {name!r}"
                              f"{close_matches(str(name), MESH_AXES)}; the axes are "
                              f"{', '.join(MESH_AXES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"config.mesh={axes!r} names an axis twice; name each of "
                          f"{', '.join(MESH_AXES)} at most once")
    sizes = [size for _, size in pairs]
    if any(not isinstance(size, int) or (size < 1 and size != -1) for size in sizes):
        raise ConfigError(f"config.mesh={axes!r}: sizes must be positive integers or -1 "
                          "(the devices the other axes leave)")
    if sizes.count(-1) > 1:
        raise ConfigError(f"config.mesh={axes!r} has more than one -1; give every axis but "
                          "one its size")
    if num_devices is None:
        return names, tuple(sizes)
    known = math.prod(size for size in sizes if size != -1)
    if -1 in sizes and num_devices % known == 0:
        sizes[sizes.index(-1)] = num_devices // known
    if -1 in sizes or math.prod(sizes) != num_devices:
        raise ConfigError(f"config.mesh={axes!r}: its sizes multiply to {known}, which does not "
                          f"{'divide' if -1 in sizes else 'equal'} the {num_devices} devices of "
                          f"this run; make them multiply to {num_devices} (or give one axis -1)")
    return names, tuple(sizes)


def _check_scanned_blocks(config: ml_collections.ConfigDict) -> None:
    """A scanned ViT (`config.model.scan`) keeps its blocks as one stacked
    `blocks` module, so per-block regexes (layer-wise lr decay's `block{i}`) would
    silently match nothing, and its last block's attention is not kept apart
    (the `pictures` evaluator): refused here rather than trained differently."""
    if not config.model.get("scan", False):
        return
    optim = config.optim
    for field, rules in (("optim.lr_multipliers", list(optim.lr_multipliers)),
                         ("optim.frozen", list(optim.frozen)),
                         ("optim.constant_lr", list(optim.constant_lr))):
        for rule in rules:
            pattern = _regex(rule, field)
            if (any(pattern.search(f"backbone/block{i}/") for i in range(64))
                    and not pattern.search("backbone/blocks/")):
                raise ConfigError(
                    f"config.{field} names single ViT blocks ({rule!r}), which "
                    "config.model.scan=True stacks into one `blocks` parameter; set "
                    "config.model.scan=False to treat blocks apart")
    for name, section in config.evals.items():
        if section.get("type") == "pictures" and section.enabled:
            raise ConfigError(
                f"config.evals.{name} draws the last ViT block's attention, which "
                "config.model.scan=True does not keep apart; set config.model.scan=False "
                f"or config.evals.{name}.enabled=False")


def _regex(rule: str, field: str) -> re.Pattern:
    try:
        return re.compile(rule)
    except (re.error, TypeError) as error:
        raise ConfigError(f"config.{field} has {rule!r}, not a regex ({error})") from None


def _get(config: ml_collections.ConfigDict, field: str):
    value = config
    for part in field.split("."):
        value = value[part]
    return value


def _positive(config: ml_collections.ConfigDict, field: str) -> None:
    value = _get(config, field)
    if not value > 0:
        raise ConfigError(f"config.{field}={value!r} must be > 0")
