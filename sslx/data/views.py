"""From `config.views` to the crops a method sees.

`config.views` holds named view groups (`view_group(...)` in config_defaults):
`count` crops of one `size` each. Two-view methods use one group of two,
multi-crop methods (DINO, SwAV) add a group of small local crops. The crops are
ordered by descending size, then group name, then crop index, so views[0] is
the first crop of the largest group (the crop DINO's teacher sees first).

`make_views` returns a dict so later inputs (masks for masked-image modelling)
become new keys next to 'views' without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections
import tensorflow as tf

from sslx.data.augment import ViewSpec, augment_view
from sslx.errors import ConfigError, close_matches

# Fields that may hold one value per crop instead of one for the whole group.
PER_CROP_FIELDS = (
    "flip_prob", "jitter_prob", "brightness", "contrast", "saturation", "hue",
    "grayscale_prob", "blur_prob", "solarize_prob",
)
# (low, high) ranges shared by all crops of a group.
RANGE_FIELDS = ("crop_scale", "crop_ratio", "blur_sigma")
PROB_FIELDS = ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")
GROUP_FIELDS = ("count", "size", *RANGE_FIELDS, *PER_CROP_FIELDS)


def view_specs(views_config: ml_collections.ConfigDict) -> tuple[ViewSpec, ...]:
    """One validated `ViewSpec` per crop, in view order; `ConfigError` names the
    offending field as `config.views.<group>.<field>`."""
    if not views_config:
        raise ConfigError("config.views is empty: add at least one view group")
    specs = [spec for name, group in views_config.items() for spec in _group_specs(name, group)]
    return tuple(sorted(specs, key=lambda s: (-s.size, s.group, s.index)))


def global_view_count(views_config: ml_collections.ConfigDict) -> int:
    """How many crops the largest group has: `views[:n]` are the global crops that
    multi-crop teachers (DINO, iBOT) see and masked-image methods mask."""
    specs = view_specs(views_config)
    return sum(spec.group == specs[0].group for spec in specs)


def make_views(
    image: tf.Tensor,
    seed: tf.Tensor,
    specs: Sequence[ViewSpec],
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """`{'views': (crop per spec)}` of one uint8 image; each crop gets its own seed
    split from `seed`."""
    seeds = tf.unstack(tf.random.split(seed, len(specs)))
    return {
        "views": tuple(
            augment_view(image, s, spec, mean, std) for s, spec in zip(seeds, specs, strict=True)
        )
    }


def _group_specs(name: str, group: ml_collections.ConfigDict) -> list[ViewSpec]:
    where = f"config.views.{name}"
    unknown = sorted(set(group.keys()) - set(GROUP_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]} is not a view-group field"
            f"{close_matches(unknown[0], GROUP_FIELDS)}"
        )
    missing = [f for f in GROUP_FIELDS if f not in group]
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(missing)}: build it with view_group(...)")
    count, size = group.count, group.size
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"{where}.count={count!r} must be a positive integer")
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"{where}.size={size!r} must be a positive integer")
    ranges = {f: _range(f"{where}.{f}", group[f]) for f in RANGE_FIELDS}
    _check_ranges(where, ranges)
    per_crop = {f: _per_crop(f"{where}.{f}", group[f], count) for f in PER_CROP_FIELDS}
    _check_per_crop(where, per_crop)
    return [
        ViewSpec(
            group=name, index=i, size=size, **ranges, **{f: v[i] for f, v in per_crop.items()}
        )
        for i in range(count)
    ]


def _range(field: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"{field}={value!r} must be a (low, high) pair")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ConfigError(f"{field}={value!r}: low {low} is above high {high}")
    return low, high


def _per_crop(field: str, value: Any, count: int) -> tuple[float, ...]:
    """A scalar for all crops, or exactly one value per crop."""
    if not isinstance(value, Sequence):
        return (float(value),) * count
    if len(value) == 1:
        return (float(value[0]),) * count
    if len(value) != count:
        raise ConfigError(
            f"{field} has {len(value)} values for count={count}: give one value "
            f"or {count} (one per crop)"
        )
    return tuple(float(v) for v in value)


def _check_ranges(where: str, ranges: dict[str, tuple[float, float]]) -> None:
    low, high = ranges["crop_scale"]
    if not 0 < low <= high <= 1:
        raise ConfigError(f"{where}.crop_scale=({low}, {high}) must lie within (0, 1]")
    if ranges["crop_ratio"][0] <= 0:
        raise ConfigError(f"{where}.crop_ratio={ranges['crop_ratio']} must be positive")
    if ranges["blur_sigma"][0] <= 0:
        raise ConfigError(f"{where}.blur_sigma={ranges['blur_sigma']} must be positive")


def _check_per_crop(where: str, per_crop: dict[str, tuple[float, ...]]) -> None:
    for field, values in per_crop.items():
        if field in PROB_FIELDS:
            low, high = 0.0, 1.0
        elif field == "hue":
            low, high = 0.0, 0.5
        else:
            low, high = 0.0, float("inf")
        bad = [v for v in values if not low <= v <= high]
        if bad:
            raise ConfigError(f"{where}.{field}={bad[0]} must lie within [{low}, {high}]")
