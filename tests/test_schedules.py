"""Schedules: values at the points recipes rely on, eager and under jit with a traced step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx.schedules import (
    cosine_ramp,
    ema_update,
    per_epoch,
    per_epoch_linspace,
    warmup_constant,
    warmup_cosine,
)


def _eager_and_jitted(schedule, step: int) -> tuple[float, float]:
    return float(schedule(step)), float(jax.jit(schedule)(jnp.asarray(step, jnp.int32)))


def _assert_at(schedule, expected: dict[int, float], rtol: float = 1e-6) -> None:
    for step, value in expected.items():
        for got in _eager_and_jitted(schedule, step):
            np.testing.assert_allclose(got, value, rtol=rtol, atol=1e-9, err_msg=f"step {step}")


def test_warmup_cosine_key_points():
    peak, total, warmup, end = 2.0, 100, 10, 0.1
    mid_cosine = end + (peak - end) * 0.5  # halfway through the cosine part
    _assert_at(warmup_cosine(peak, total, warmup, end), {
        0: 0.0, 5: 1.0, 10: peak, 55: mid_cosine, 100: end, 150: end})


def test_warmup_cosine_edges():
    _assert_at(warmup_cosine(1.0, 10, 0), {0: 1.0, 5: 0.5, 10: 0.0})
    _assert_at(warmup_cosine(1.0, 10, 10), {0: 0.0, 5: 0.5, 10: 1.0, 20: 1.0})
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(1.0, 10, 11)


def test_cosine_ramp_byol_momentum():
    k = 1000
    _assert_at(cosine_ramp(0.996, 1.0, k), {0: 0.996, k // 2: 0.998, k: 1.0, 2 * k: 1.0})
    step = 300
    tau = 1 - (1 - 0.996) * (np.cos(np.pi * step / k) + 1) / 2  # BYOL's formula
    _assert_at(cosine_ramp(0.996, 1.0, k), {step: tau})


def test_cosine_ramp_increasing_and_from_zero():
    _assert_at(cosine_ramp(0.04, 0.4, 100), {0: 0.04, 50: 0.22, 100: 0.4})  # DINO wd
    _assert_at(cosine_ramp(0.0, 1.0, 4), {0: 0.0, 2: 0.5, 4: 1.0})


def test_warmup_constant():
    _assert_at(warmup_constant(0.04, 0.07, 30), {0: 0.04, 15: 0.055, 30: 0.07, 100: 0.07})
    _assert_at(warmup_constant(0.04, 0.07, 0), {0: 0.07, 10: 0.07})


def test_per_epoch_linspace_is_dinos_teacher_temp_schedule():
    """`np.concatenate((np.linspace(w, t, W), np.ones(E - W) * t))[epoch]` of main_dino.py."""
    official = np.concatenate((np.linspace(0.04, 0.07, 30), np.full(70, 0.07)))
    schedule = per_epoch_linspace(0.04, 0.07, 30, steps_per_epoch=5)
    _assert_at(schedule, {step: official[step // 5] for step in (0, 4, 5, 72, 145, 149, 150, 499)})
    _assert_at(per_epoch_linspace(0.04, 0.07, 0, 5), {0: 0.07, 9: 0.07})
    _assert_at(per_epoch_linspace(0.04, 0.07, 1, 5), {0: 0.04, 4: 0.04, 5: 0.07})


def test_per_epoch_holds_each_epochs_first_value():
    """SimSiam's adjust_learning_rate: lr * 0.5 * (1 + cos(pi * epoch / epochs))."""
    schedule = per_epoch(warmup_cosine(0.1, 100, 0), steps_per_epoch=10)
    expected = {step: 0.1 * 0.5 * (1 + np.cos(np.pi * (step // 10) / 10))
                for step in (0, 9, 10, 19, 55, 99)}
    _assert_at(schedule, expected, rtol=1e-5)


def test_ema_update_against_numpy():
    rng = np.random.default_rng(0)
    target = {"a": rng.normal(size=(3, 4)).astype(np.float32),
              "b": [rng.normal(size=(5,)).astype(np.float32)]}
    online = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), target)
    m = 0.99
    expected = jax.tree.map(lambda t, o: m * t + (1 - m) * o, target, online)
    for got in (ema_update(target, online, m),
                jax.jit(ema_update)(target, online, jnp.float32(m))):
        jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-6), got, expected)
        assert all(x.dtype == np.float32 for x in jax.tree.leaves(got))


def test_ema_update_with_scheduled_momentum_in_jit():
    schedule = cosine_ramp(0.5, 1.0, 10)
    step_fn = jax.jit(lambda t, o, step: ema_update(t, o, schedule(step)))
    t, o = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
    np.testing.assert_allclose(step_fn(t, o, jnp.int32(0))["w"], 0.5)
    np.testing.assert_allclose(step_fn(t, o, jnp.int32(10))["w"], 0.0)
