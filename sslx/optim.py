"""Optimisation recipes: LARS, AdamW and SGD as optax chains built from `config.optim`.

`build_optimizer` turns the config into one `optax.GradientTransformation` and
the learning-rate schedule (for logging). The chain, outermost first:

    freeze (config.optim.frozen, and the    zero grads/params/updates of frozen leaves
            method's `frozen_params`)
      clip (grad_clip > 0)                  the global norm, or each tensor's (grad_clip_mode)
      recipe:
        lars   add_decayed_weights -> masked(scale_by_trust_ratio) -> lr -> trace
        adamw  scale_by_adam -> add_decayed_weights (decoupled) -> lr
               (with `frozen`, a separate Adam per freeze length that starts
               counting when its freeze ends: `adam_counting_from_unfreezing`)
        sgd    add_decayed_weights (L2, PyTorch semantics) -> trace -> lr

where `lr` is `scale_by_learning_rate(schedule)`, or, with `constant_lr`, an
`optax.partition` of it and `scale_by_learning_rate(peak)` by param path,
followed, with `lr_multipliers`, by a fixed per-param factor of the lr
(Barlow Twins' 0.0048/0.2 for biases and norms).

Biases and normalisation scales (leaves named `bias` or `scale`, whatever their
shape: Flax's attention biases are `(heads, head_dim)`) get no weight decay and
no LARS adaptation with `exclude_bias_and_norm`, as the official SimCLR, BYOL,
Barlow Twins and DINO code decides by name; the params whose path matches a regex
of `exclude_from_decay` get neither, whatever their name (SimCLR's LARSOptimizer
`exclude_from_weight_decay=[..., 'head_supervised']`, which also leaves the
fine-tuned classifier out of the layer adaptation).

Param paths are the keys of the param tree joined by '/', e.g.
`backbone/patch_embed/kernel` or `projector/Dense_0/bias` (see `param_paths`).
The regexes of `frozen`, `constant_lr`, `lr_multipliers` and `exclude_from_decay`
are matched with
`re.search`: a pattern matches anywhere in the path (`last_layer`, `.*last_layer.*`
and `^head/last_layer/` all work; anchor with ^ and $ to be exact). Dot-free
patterns can be plain ConfigDict keys; patterns with dots need
`ml_collections.ConfigDict({...}, allow_dotted_keys=True)`. A pattern that
matches no parameter is a `ConfigError` when the optimizer state is initialised.

The optimizer state holds only arrays (int32 step counters and param-shaped
moments), so it checkpoints with orbax and shards like the params.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sslx.errors import ConfigError, close_matches
from sslx.schedules import cosine_ramp, per_epoch, warmup_cosine

PyTree = Any

OPTIMIZERS = ("lars", "adamw", "sgd")
GRAD_CLIP_MODES = ("global", "per_tensor")
# Leaf names of biases and normalisation scales (Flax's Dense/Conv/attention `bias`,
# BatchNorm/LayerNorm `scale` and `bias`): what `exclude_bias_and_norm` exempts.
NOT_DECAYED_NAMES = ("bias", "scale")
LR_SCALINGS = ("linear", "sqrt", "none")
REFERENCE_BATCH_SIZE = 256
# LARS trust coefficient eta of SimCLR, BYOL and Barlow Twins (and optax.lars).
LARS_TRUST_COEFFICIENT = 1e-3
ADAM_EPS = 1e-8
_INT32_MAX = 2**31 - 1


def param_paths(params: PyTree) -> PyTree:
    """The tree of `params` with each leaf replaced by its path, keys joined by
    '/' (`backbone/patch_embed/kernel`): what `frozen`/`constant_lr` regexes see."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path, simple=True, separator="/"), params)


def scaled_learning_rate(base_lr: float, lr_scaling: str, global_batch_size: int) -> float:
    """The peak learning rate for a global batch of B images:

    - linear: base_lr * B / 256 (Goyal et al.; SimCLR/BYOL LARS, DINO, MoCo v3);
    - sqrt:   base_lr * sqrt(B / 256) (SimCLR's small-batch "0.075 * sqrt(B)" is
              base_lr = 1.2 here, since sqrt(B) = 16 * sqrt(B / 256));
    - none:   base_lr.
    """
    ratio = global_batch_size / REFERENCE_BATCH_SIZE
    if lr_scaling == "linear":
        return base_lr * ratio
    if lr_scaling == "sqrt":
        return base_lr * math.sqrt(ratio)
    if lr_scaling == "none":
        return base_lr
    raise ConfigError(f"config.optim.lr_scaling={lr_scaling!r} is not one of "
                      f"{', '.join(LR_SCALINGS)}{close_matches(str(lr_scaling), LR_SCALINGS)}")


def build_optimizer(
    optim_config: Any, *, global_batch_size: int, total_steps: int, steps_per_epoch: int,
    frozen_for_run: Sequence[str] = (),
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(optimizer, lr_schedule)` for `config.optim` (see config_defaults.py).

    `total_steps` is the number of optimizer steps of the run (the cosine reaches
    `min_lr` there); epochs in the config become steps via `steps_per_epoch`.
    `frozen_for_run`: regexes of params frozen for the whole run besides
    `config.optim.frozen` (the method's, `Method.frozen_params`).
    Raises `ConfigError` naming the field for any unusable value, before anything
    is traced or compiled."""
    c = optim_config
    _check_run_lengths(global_batch_size, total_steps, steps_per_epoch)
    name = _check_choice("name", c.name, OPTIMIZERS)
    _check_positive("base_lr", c.base_lr)
    peak_lr = scaled_learning_rate(c.base_lr, c.lr_scaling, global_batch_size)
    if not 0.0 <= c.min_lr <= peak_lr:
        raise ConfigError(f"config.optim.min_lr={c.min_lr} must be >= 0 and <= the peak "
                          f"learning rate {peak_lr:g} (base_lr={c.base_lr} with "
                          f"lr_scaling={c.lr_scaling!r} at batch size {global_batch_size})")
    _check_nonnegative("warmup_epochs", c.warmup_epochs)
    warmup_steps = _epochs_to_steps(c.warmup_epochs, steps_per_epoch)
    if warmup_steps > total_steps:
        raise ConfigError(f"config.optim.warmup_epochs={c.warmup_epochs} ({warmup_steps} "
                          f"steps) is longer than the run ({total_steps} steps): lower it, "
                          "e.g. --config.optim.warmup_epochs=0")
    _check_nonnegative("weight_decay", c.weight_decay)
    _check_nonnegative("grad_clip", c.grad_clip)
    clip_mode = _check_choice("grad_clip_mode", c.grad_clip_mode, GRAD_CLIP_MODES)
    if name == "adamw":
        _check_unit_interval("b1", c.b1)
        _check_unit_interval("b2", c.b2)
    else:
        _check_unit_interval("momentum", c.momentum)
    freeze_rules = [(pattern, _INT32_MAX)
                    for pattern in _compile_patterns("frozen", tuple(frozen_for_run))]
    freeze_rules += _frozen_rules(c.frozen, steps_per_epoch)  # longest first, as sorted
    # A config saved before `exclude_from_decay` existed reads as none.
    excluded = _compile_patterns("exclude_from_decay", c.get("exclude_from_decay", ()))
    constant_patterns = _compile_patterns("constant_lr", c.constant_lr)
    multiplier_rules = _pattern_rules("lr_multipliers", c.lr_multipliers, "a factor > 0",
                                      lambda factor: factor > 0)

    lr_schedule = warmup_cosine(peak_lr, total_steps, warmup_steps, c.min_lr)
    if c.lr_per_epoch:
        lr_schedule = per_epoch(lr_schedule, steps_per_epoch)
    weight_decay = (cosine_ramp(c.weight_decay, c.weight_decay_end, total_steps)
                    if c.weight_decay_end >= 0 else float(c.weight_decay))
    decay_mask = (_decayed_mask(c.exclude_bias_and_norm, excluded)
                  if c.exclude_bias_and_norm or excluded else None)
    scale_by_lr = _scale_by_lr(lr_schedule, peak_lr, constant_patterns)
    if multiplier_rules:
        scale_by_lr = optax.chain(scale_by_lr, scale_by_lr_multipliers(multiplier_rules))
    momentum = [optax.trace(decay=c.momentum)] if c.momentum > 0 else []  # no buffer if unused

    if name == "lars":
        trust_ratio = optax.scale_by_trust_ratio(trust_coefficient=LARS_TRUST_COEFFICIENT)
        recipe = [
            optax.add_decayed_weights(weight_decay, mask=decay_mask),
            trust_ratio if decay_mask is None else optax.masked(trust_ratio, decay_mask),
            scale_by_lr,
            *momentum,
        ]
    elif name == "adamw":
        adam = optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=ADAM_EPS)
        recipe = [
            adam_counting_from_unfreezing(adam, freeze_rules) if freeze_rules else adam,
            optax.add_decayed_weights(weight_decay, mask=decay_mask),
            scale_by_lr,
        ]
    else:
        recipe = [
            optax.add_decayed_weights(weight_decay, mask=decay_mask),
            *momentum,
            scale_by_lr,
        ]
    clip = []
    if c.grad_clip > 0:
        clip = [optax.clip_by_global_norm(c.grad_clip) if clip_mode == "global"
                else clip_each_tensor(c.grad_clip)]
    optimizer = optax.chain(*clip, *recipe)
    if freeze_rules:
        optimizer = freeze_for_steps(optimizer, freeze_rules)
    return optimizer, lr_schedule


class FreezeState(NamedTuple):
    """Steps taken so far, and the state of the wrapped optimizer."""

    count: jax.Array  # int32 scalar
    inner_state: optax.OptState


def freeze_for_steps(
    inner: optax.GradientTransformation, rules: Sequence[tuple[re.Pattern, int]]
) -> optax.GradientTransformationExtraArgs:
    """Wraps `inner` so that params whose path matches a rule `(regex, n)` get zero
    updates during the first `n` steps (the largest `n` when several match).

    While frozen, `inner` sees a zero gradient and a zero param for the leaf, so
    no weight decay flows into momentum and its moments stay zero, as if the
    param had no gradient in PyTorch (DINO's last layer, SwAV's prototypes); the
    frozen gradient does not count in the clipping norm either. Adam's step count
    is kept per freeze length by `adam_counting_from_unfreezing`. `n = 2**31 - 1`
    is frozen for any run length."""

    def init(params: PyTree) -> FreezeState:
        _frozen_steps(params, rules)  # a pattern matching nothing fails here, before compiling
        return FreezeState(count=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update(updates, state, params=None, **extra_args):
        steps = _frozen_steps(updates, rules)

        def hide(tree: PyTree) -> PyTree:
            return jax.tree.map(
                lambda x, n: jnp.where(state.count < n, jnp.zeros_like(x), x) if n else x,
                tree, steps)

        updates, inner_state = inner.update(
            hide(updates), state.inner_state, None if params is None else hide(params),
            **extra_args)
        return hide(updates), FreezeState(optax.safe_increment(state.count), inner_state)

    return optax.GradientTransformationExtraArgs(init, update)


def _frozen_rule(tree: PyTree, rules: Sequence[tuple[re.Pattern, int]]) -> PyTree:
    """For each leaf, the index of the first rule `(regex, n)` matching its path (the
    rules come longest freeze first, `_frozen_rules`), -1 if none does."""
    paths = param_paths(tree)
    _check_patterns_match("frozen", [p for p, _ in rules], paths)
    return jax.tree.map(
        lambda path: next((i for i, (p, _) in enumerate(rules) if p.search(path)), -1), paths)


def _frozen_steps(tree: PyTree, rules: Sequence[tuple[re.Pattern, int]]) -> PyTree:
    """For each leaf, the steps it stays frozen: the `n` of its `_frozen_rule`, the
    largest of the rules matching its path; 0 if none does."""
    return jax.tree.map(lambda i: rules[i][1] if i >= 0 else 0, _frozen_rule(tree, rules))


def adam_counting_from_unfreezing(
    adam: optax.GradientTransformation, rules: Sequence[tuple[re.Pattern, int]]
) -> optax.GradientTransformation:
    """`adam` for the params no rule freezes, and for the params of rule i, frozen for
    `n` steps, a copy of it that first steps at step `n`
    (`optax.transforms.conditionally_mask`): its step count, hence its bias
    correction, starts when the freeze ends. PyTorch's AdamW skips a param without
    gradient (DINO's and iBOT's last layer in the first epoch) in the same way; one
    shared count would make the first updates after the freeze several times too
    large. The groups are the rules, not their lengths in steps, so the state's
    structure does not depend on the run's length: a run restored without its
    training data (`sslx.load`, export, evaluation) has the same state."""

    def labels(tree: PyTree) -> PyTree:
        return jax.tree.map(lambda i: f"frozen_{i}" if i >= 0 else "trained",
                            _frozen_rule(tree, rules))

    groups = {f"frozen_{i}": optax.transforms.conditionally_mask(
        adam, lambda count, n=n: count >= n) for i, (_, n) in enumerate(rules)}
    return optax.partition({"trained": adam, **groups}, labels)


def _scale_by_lr(
    schedule: optax.Schedule, peak_lr: float, constant_patterns: Sequence[re.Pattern]
) -> optax.GradientTransformation:
    """The scheduled lr, except the params matching `constant_patterns` stay at the
    peak lr (SimSiam's predictor "fix_lr")."""
    scheduled = optax.scale_by_learning_rate(schedule)
    if not constant_patterns:
        return scheduled

    def labels(tree: PyTree) -> PyTree:
        paths = param_paths(tree)
        _check_patterns_match("constant_lr", constant_patterns, paths)
        return jax.tree.map(
            lambda path: "constant" if any(p.search(path) for p in constant_patterns)
            else "scheduled", paths)

    return optax.partition(
        {"scheduled": scheduled, "constant": optax.scale_by_learning_rate(peak_lr)}, labels)


def scale_by_lr_multipliers(
    rules: Sequence[tuple[re.Pattern, float]]
) -> optax.GradientTransformation:
    """Scales the update of each param whose path matches a rule `(regex, factor)` by
    `factor` (the product when several match): a per-param-group lr that follows
    the same schedule. One `optax.masked(optax.scale)` per rule; no array state."""

    def matching(pattern: re.Pattern):
        def mask(tree: PyTree) -> PyTree:
            paths = param_paths(tree)
            _check_patterns_match("lr_multipliers", [pattern], paths)  # fails at init
            return jax.tree.map(lambda path: bool(pattern.search(path)), paths)
        return mask

    return optax.chain(*(optax.masked(optax.scale(factor), matching(pattern))
                         for pattern, factor in rules))


def clip_each_tensor(max_norm: float) -> optax.GradientTransformation:
    """Each gradient tensor whose norm exceeds `max_norm` scaled by max_norm / (norm +
    1e-6), the others untouched: DINO's and iBOT's `utils.clip_gradients`. Unlike
    the global-norm clip, one large tensor does not shrink every other one's step.
    (optax's `clip_by_block_rms` bounds the RMS, not the norm.)"""

    def clip(g: jax.Array) -> jax.Array:
        factor = max_norm / (jnp.linalg.norm(g.ravel()) + 1e-6)
        return jnp.where(factor < 1, g * factor.astype(g.dtype), g)

    return optax.stateless(lambda updates, params: jax.tree.map(clip, updates))


def _decayed_mask(bias_and_norm: bool, excluded: Sequence[re.Pattern]
                  ) -> Callable[[PyTree], PyTree]:
    """The mask of the params that get weight decay and LARS adaptation: with
    `bias_and_norm`, False for biases and normalisation scales (`NOT_DECAYED_NAMES`),
    as the official code of SimCLR, BYOL, Barlow Twins and DINO groups them (kernels,
    embeddings, class and mask tokens, a learned weight-norm scale `g` stay True);
    False for the params whose path matches a regex of `excluded`."""

    def mask(tree: PyTree) -> PyTree:
        paths = param_paths(tree)
        _check_patterns_match("exclude_from_decay", excluded, paths)  # fails at init
        return jax.tree.map(
            lambda path: not ((bias_and_norm and path.rsplit("/", 1)[-1] in NOT_DECAYED_NAMES)
                              or any(p.search(path) for p in excluded)), paths)

    return mask


def _epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """Rounded to the nearest step; capped at the int32 step counter's range, so
    `frozen` with a huge number of epochs means "for the whole run"."""
    return round(min(float(epochs) * steps_per_epoch, _INT32_MAX))


def _frozen_rules(frozen: Any, steps_per_epoch: int) -> list[tuple[re.Pattern, int]]:
    """`config.optim.frozen` as `(regex, steps)` rules, longest freeze first (the order
    of the config on a tie). Every rule of more than 0 epochs is kept, also one this
    run is too short to freeze anything with (0 steps), so which rules exist, and
    the optimizer state's structure with them, depend on the config alone."""
    rules = _pattern_rules("frozen", frozen, "a number of epochs >= 0",
                           lambda epochs: epochs >= 0)
    rules = sorted([rule for rule in rules if rule[1] > 0], key=lambda rule: -rule[1])
    return [(pattern, _epochs_to_steps(epochs, steps_per_epoch)) for pattern, epochs in rules]


def _pattern_rules(field: str, mapping: Any, requirement: str,
                   is_valid: Callable[[float], bool]) -> list[tuple[re.Pattern, float]]:
    """`config.optim.<field>` ({regex: number}) as compiled `(pattern, number)` pairs,
    each number checked by `is_valid` (false for nan and non-numbers)."""
    rules = []
    for pattern, value in (mapping.items() if mapping is not None else ()):
        (compiled,) = _compile_patterns(field, (pattern,))
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number) or not is_valid(number):
            raise ConfigError(f"config.optim.{field}[{pattern!r}]={value!r} must be {requirement}")
        rules.append((compiled, number))
    return rules


def _compile_patterns(field: str, patterns: Any) -> list[re.Pattern]:
    if isinstance(patterns, str):
        patterns = (patterns,)
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as e:
            raise ConfigError(f"config.optim.{field}: {pattern!r} is not a valid regex "
                              f"({e})") from None
    return compiled


def _check_patterns_match(field: str, patterns: Sequence[re.Pattern], paths: PyTree) -> None:
    """A pattern that matches nothing is a typo, not a no-op: say so, with the paths."""
    all_paths = jax.tree.leaves(paths)
    for p in patterns:
        if not any(p.search(path) for path in all_paths):
            shown = ", ".join(all_paths[:8]) + (", ..." if len(all_paths) > 8 else "")
            raise ConfigError(f"config.optim.{field}: regex {p.pattern!r} matches no "
                              f"parameter; param paths look like: {shown}")


def _check_run_lengths(global_batch_size: int, total_steps: int, steps_per_epoch: int) -> None:
    for name, value in (("global_batch_size", global_batch_size),
                        ("total_steps", total_steps), ("steps_per_epoch", steps_per_epoch)):
        if not (isinstance(value, numbers.Integral) and value > 0):
            raise ConfigError(f"build_optimizer: {name}={value!r} must be a positive int")


def _check_choice(field: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"config.optim.{field}={value!r} is not one of {', '.join(choices)}"
                          f"{close_matches(str(value), choices)}")
    return value


def _check_positive(field: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"config.optim.{field}={value} must be > 0")


def _check_nonnegative(field: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"config.optim.{field}={value} must be >= 0")


def _check_unit_interval(field: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"config.optim.{field}={value} must be in [0, 1)")
