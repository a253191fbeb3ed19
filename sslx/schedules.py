"""Every schedule of the library, and the one EMA update.

Schedules are optax-style callables `step -> value` built from optax's own
schedules, so they accept Python ints and traced int32 steps inside `jax.jit`
alike. The learning rate, weight decay, EMA momenta (BYOL, MoCo v3, DINO) and the
DINO teacher temperature all come from here, so a recipe's curves are defined
once and tested once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any


def warmup_cosine(
    peak: float, total_steps: int, warmup_steps: int, end_value: float = 0.0
) -> optax.Schedule:
    """Linear warmup from 0 to `peak` over `warmup_steps`, then a half cosine to
    `end_value` at `total_steps` (warmup included), constant after.

    The learning-rate curve of every published self-supervised recipe. Zero
    warmup starts at `peak`; `warmup_steps == total_steps` is warmup only."""
    if not 0 <= warmup_steps <= total_steps or total_steps <= 0:
        raise ValueError(
            f"warmup_cosine needs 0 <= warmup_steps <= total_steps and total_steps > 0, "
            f"got warmup_steps={warmup_steps}, total_steps={total_steps}")
    if warmup_steps == 0:
        return cosine_ramp(peak, end_value, total_steps)
    if warmup_steps == total_steps:
        return optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
        decay_steps=total_steps, end_value=end_value)


def cosine_ramp(start: float, end: float, total_steps: int) -> optax.Schedule:
    """`end - (end - start) * (cos(pi * k / K) + 1) / 2` for step k, K = `total_steps`,
    then constant at `end`.

    One half cosine in either direction: EMA momentum going up to 1 (BYOL
    tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2 is `cosine_ramp(tau_base, 1, K)`; MoCo v3
    0.99 -> 1; DINO teacher 0.996 -> 1), DINO's weight decay 0.04 -> 0.4, and the
    cosine part of the learning rate. Written as `end + cosine_decay(start - end)`
    so that no ratio `end / start` is needed (start may be 0)."""
    decay = optax.cosine_decay_schedule(init_value=start - end, decay_steps=total_steps)
    return lambda step: end + decay(step)


def warmup_constant(start: float, end: float, warmup_steps: int) -> optax.Schedule:
    """Linear from `start` to `end` over `warmup_steps`, then constant at `end`
    (DINO teacher temperature 0.04 -> 0.07 over its first 30 epochs)."""
    if warmup_steps <= 0:
        return optax.constant_schedule(end)
    return optax.linear_schedule(init_value=start, end_value=end, transition_steps=warmup_steps)


def per_epoch(schedule: optax.Schedule, steps_per_epoch: int) -> optax.Schedule:
    """`schedule` held through each epoch at its value at the epoch's first step: the
    staircase of official code that sets a value once per epoch (SimSiam's
    `adjust_learning_rate`)."""
    return lambda step: schedule(step // steps_per_epoch * steps_per_epoch)


def per_epoch_linspace(start: float, end: float, epochs: int,
                       steps_per_epoch: int) -> optax.Schedule:
    """`np.linspace(start, end, epochs)[epoch]` through the first `epochs` epochs, `end`
    after: DINO's and iBOT's teacher-temperature warm-up, which reaches `end` in the
    last warm-up epoch and changes once per epoch."""
    values = jnp.asarray(np.append(np.linspace(start, end, epochs), end), jnp.float32)
    return lambda step: values[jnp.minimum(step // steps_per_epoch, epochs)]


def ema_update(target: PyTree, online: PyTree, momentum: float | jax.Array) -> PyTree:
    """`momentum * target + (1 - momentum) * online`, leaf by leaf, keeping the
    target's dtypes: the one EMA of the library (BYOL/MoCo/DINO teachers)."""
    return jax.tree.map(
        lambda t, o: (momentum * t + (1.0 - momentum) * o).astype(t.dtype), target, online)
