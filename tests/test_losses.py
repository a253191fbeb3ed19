"""Losses against plain float64 numpy references (explicit loops, written from the
papers/official code rather than from sslx.losses) and against their known
properties: collapse values, invariances, and exact zero gradients into
stop-gradient targets."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import losses

# Compiled once per shape: much faster on CPU than op-by-op eager dispatch. Each
# is the library function itself under jit (the way methods call them).
L = SimpleNamespace(
    **{
        name: jax.jit(getattr(losses, name))
        for name in (
            "nt_xent", "byol_loss", "negative_cosine", "moco_v3", "barlow_twins",
            "vicreg", "vicreg_terms", "dino_loss", "update_center", "ibot_patch_loss",
            "embedding_std",
        )
    },
    sinkhorn=jax.jit(losses.sinkhorn, static_argnames=("iterations",)),
    swav_loss=jax.jit(losses.swav_loss, static_argnames=("num_assign_crops", "iterations")),
)

RTOL = 1e-5
ATOL = 1e-6


def _rand(seed: int, *shape: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape) * scale


def _close(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def _f32(x: np.ndarray) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


# ---------------------------------------------------------------------------
# numpy references
# ---------------------------------------------------------------------------


def _np_unit(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt(np.sum(v * v))


def _np_log_softmax(row: np.ndarray) -> np.ndarray:
    m = np.max(row)
    return row - m - math.log(np.sum(np.exp(row - m)))


def _np_softmax(row: np.ndarray) -> np.ndarray:
    return np.exp(_np_log_softmax(row))


def ref_nt_xent(z_a, z_b, tau):
    z = [_np_unit(v) for v in np.concatenate([z_a, z_b])]
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = i + n if i < n else i - n
        denom = sum(math.exp(z[i] @ z[j] / tau) for j in range(n2) if j != i)
        total += -math.log(math.exp(z[i] @ z[pos] / tau) / denom)
    return total / n2


def ref_byol(p, z):
    return np.mean([2 - 2 * (_np_unit(p[i]) @ _np_unit(z[i])) for i in range(len(p))])


def ref_negative_cosine(p, z):
    return -np.mean([_np_unit(p[i]) @ _np_unit(z[i]) for i in range(len(p))])


def ref_moco_v3(q, k, tau):
    n = len(q)
    total = 0.0
    for i in range(n):
        logits = np.array([_np_unit(q[i]) @ _np_unit(k[j]) / tau for j in range(n)])
        total += -_np_log_softmax(logits)[i]
    return total / n * 2 * tau


def ref_barlow(z_a, z_b, lambd):
    n, d = z_a.shape
    # torch BatchNorm1d(affine=False), training mode: biased variance, eps 1e-5
    a = (z_a - z_a.mean(0)) / np.sqrt(z_a.var(0) + 1e-5)
    b = (z_b - z_b.mean(0)) / np.sqrt(z_b.var(0) + 1e-5)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[s, i] * b[s, j] for s in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return loss


def ref_vicreg_terms(x, y):
    d = x.shape[1]
    invariance = np.mean((x - y) ** 2)
    variance = 0.0
    covariance = 0.0
    for z in (x, y):
        std = np.sqrt(z.var(axis=0, ddof=1) + 1e-4)
        variance += np.mean(np.maximum(0.0, 1 - std)) / 2
        cov = np.cov(z, rowvar=False)  # unbiased, centred
        covariance += sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return invariance, variance, covariance


def ref_dino(student, teacher, center, s_temp, t_temp):
    total, terms = 0.0, 0
    for iq, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == iq:
                continue
            per_image = []
            for b in range(t.shape[0]):
                q = _np_softmax((t[b] - center) / t_temp)
                per_image.append(-np.sum(q * _np_log_softmax(s[b] / s_temp)))
            total += np.mean(per_image)
            terms += 1
    return total / terms


def ref_ibot(student, teacher, masks, center, s_temp, t_temp):
    crop_losses = []
    for s, t, m in zip(student, teacher, masks, strict=True):
        image_losses = []
        for b in range(s.shape[0]):
            acc, count = 0.0, 0
            for p in range(s.shape[1]):
                if m[b, p]:
                    q = _np_softmax((t[b, p] - center) / t_temp)
                    acc += -np.sum(q * _np_log_softmax(s[b, p] / s_temp))
                    count += 1
            image_losses.append(acc / max(count, 1))
        crop_losses.append(np.mean(image_losses))
    return np.mean(crop_losses)


def ref_sinkhorn(out, epsilon, iterations):
    """SwAV's `distributed_sinkhorn`, single process, in float64."""
    q = np.exp(out / epsilon).T  # K x B
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True)
        q = q / k
        q = q / q.sum(axis=0, keepdims=True)
        q = q / b
    q = q * b
    return q.T


def ref_swav(scores, n_assign, temperature, epsilon, iterations, queues=None):
    bs = scores[0].shape[0]
    n_crops = len(scores)
    loss = 0.0
    for i in range(n_assign):
        out = scores[i]
        if queues is not None:
            out = np.concatenate([queues[i], out])
        q = ref_sinkhorn(out, epsilon, iterations)[-bs:]
        sub = 0.0
        for v in range(n_crops):
            if v == i:
                continue
            log_p = np.stack([_np_log_softmax(row / temperature) for row in scores[v]])
            sub -= np.mean(np.sum(q * log_p, axis=1))
        loss += sub / (n_crops - 1)
    return loss / n_assign


def _cosine_scores(seed: int, b: int, k: int, d: int = 16) -> np.ndarray:
    """Prototype scores as SwAV computes them: normalised features · normalised prototypes."""
    feats = _rand(seed, b, d)
    protos = _rand(seed + 1, k, d)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    return feats @ protos.T


# ---------------------------------------------------------------------------
# Against references
# ---------------------------------------------------------------------------


def test_nt_xent_matches_reference():
    z_a, z_b = _rand(0, 6, 5), _rand(1, 6, 5)
    for tau in (0.1, 0.5):
        _close(L.nt_xent(_f32(z_a), _f32(z_b), tau), ref_nt_xent(z_a, z_b, tau))


def test_byol_and_negative_cosine_match_reference():
    p, z = _rand(2, 7, 4), _rand(3, 7, 4)
    _close(L.byol_loss(_f32(p), _f32(z)), ref_byol(p, z))
    _close(L.negative_cosine(_f32(p), _f32(z)), ref_negative_cosine(p, z))


def test_moco_v3_matches_reference():
    q, k = _rand(4, 6, 5), _rand(5, 6, 5)
    _close(L.moco_v3(_f32(q), _f32(k), 0.2), ref_moco_v3(q, k, 0.2))


def test_barlow_twins_matches_reference():
    z_a, z_b = _rand(6, 10, 4, scale=2.0), _rand(7, 10, 4) + 1.0
    _close(L.barlow_twins(_f32(z_a), _f32(z_b), 5e-3), ref_barlow(z_a, z_b, 5e-3))


def test_vicreg_matches_reference():
    x, y = _rand(8, 12, 5, scale=0.5), _rand(9, 12, 5, scale=0.7)
    terms = L.vicreg_terms(_f32(x), _f32(y))
    ref = ref_vicreg_terms(x, y)
    for got, want in zip(terms, ref, strict=True):
        _close(got, want)
    _close(L.vicreg(_f32(x), _f32(y)), 25 * ref[0] + 25 * ref[1] + ref[2])
    _close(L.vicreg(_f32(x), _f32(y), 1.0, 2.0, 3.0), ref[0] + 2 * ref[1] + 3 * ref[2])


def test_dino_matches_reference_lists_and_stacked():
    n_crops, n_global, b, k = 4, 2, 3, 6
    student = [_rand(10 + c, b, k, scale=2.0) for c in range(n_crops)]
    teacher = [_rand(20 + c, b, k, scale=2.0) for c in range(n_global)]
    center = _rand(30, k, scale=0.3)
    want = ref_dino(student, teacher, center, 0.1, 0.04)
    got_list = L.dino_loss(
        [_f32(s) for s in student], [_f32(t) for t in teacher], _f32(center), 0.1, 0.04
    )
    got_stacked = L.dino_loss(
        _f32(np.stack(student)), _f32(np.stack(teacher)), _f32(center)[None], 0.1, 0.04
    )
    _close(got_list, want)
    _close(got_stacked, want)


def test_update_center_is_momentum_mean():
    teacher = [_rand(40, 5, 6), _rand(41, 5, 6)]
    center = _rand(42, 6)
    rows = [teacher[c][b] for c in range(2) for b in range(5)]
    want = 0.9 * center + 0.1 * (sum(rows) / len(rows))
    got = L.update_center(_f32(center), [_f32(t) for t in teacher], 0.9)
    assert got.shape == (6,)
    _close(got, want)
    got_row = L.update_center(_f32(center)[None], _f32(np.stack(teacher)), 0.9)
    assert got_row.shape == (1, 6)
    _close(got_row[0], want)


def test_ibot_patch_loss_matches_reference():
    n_crops, b, n, k = 2, 3, 5, 4
    student = [_rand(50 + c, b, n, k, scale=2.0) for c in range(n_crops)]
    teacher = [_rand(60 + c, b, n, k, scale=2.0) for c in range(n_crops)]
    masks = [np.random.default_rng(70 + c).random((b, n)) < 0.5 for c in range(n_crops)]
    masks[0][1] = False  # an image with no masked patch contributes 0
    masks[1][2] = True
    center = _rand(80, k, scale=0.3)
    want = ref_ibot(student, teacher, masks, center, 0.1, 0.07)
    got = L.ibot_patch_loss(
        [_f32(s) for s in student], [_f32(t) for t in teacher],
        [jnp.asarray(m) for m in masks], _f32(center), 0.1, 0.07,
    )
    _close(got, want)


def test_sinkhorn_matches_reference():
    scores = _cosine_scores(90, 12, 5)
    for iterations in (1, 3):
        got = L.sinkhorn(_f32(scores), 0.05, iterations)
        _close(got, ref_sinkhorn(scores, 0.05, iterations), rtol=1e-4, atol=1e-6)


def test_swav_matches_reference_with_and_without_queue():
    n_crops, b, k, q_len = 4, 6, 5, 10
    scores = [_cosine_scores(100 + 2 * c, b, k) for c in range(n_crops)]
    queues = [_cosine_scores(200 + 2 * i, q_len, k) for i in range(2)]
    jscores = [_f32(s) for s in scores]
    _close(L.swav_loss(jscores, 2), ref_swav(scores, 2, 0.1, 0.05, 3), rtol=1e-4)
    _close(
        L.swav_loss(_f32(np.stack(scores)), 1, temperature=0.2, iterations=5),
        ref_swav(scores, 1, 0.2, 0.05, 5), rtol=1e-4,
    )
    _close(
        L.swav_loss(jscores, 2, queue_scores=[_f32(q) for q in queues]),
        ref_swav(scores, 2, 0.1, 0.05, 3, queues), rtol=1e-4,
    )
    _close(
        L.swav_loss(jscores, 2, queue_scores=_f32(queues[0])),
        ref_swav(scores, 2, 0.1, 0.05, 3, [queues[0], queues[0]]), rtol=1e-4,
    )


def test_embedding_std_matches_reference():
    z = _rand(110, 20, 8)
    unit = np.stack([_np_unit(row) for row in z])
    want = np.mean([np.std(unit[:, d]) for d in range(8)])
    _close(L.embedding_std(_f32(z)), want)
    _close(L.embedding_std(jnp.ones((20, 8))), 0.0)


# ---------------------------------------------------------------------------
# Known properties
# ---------------------------------------------------------------------------


def test_nt_xent_properties():
    z_a, z_b = _f32(_rand(120, 16, 8)), _f32(_rand(121, 16, 8))
    assert L.nt_xent(z_a, z_a, 0.5) < L.nt_xent(z_a, z_b, 0.5)
    _close(L.nt_xent(7.0 * z_a, 7.0 * z_b, 0.5), float(L.nt_xent(z_a, z_b, 0.5)))
    same = jnp.ones((16, 8))
    _close(L.nt_xent(same, same, 0.1), math.log(2 * 16 - 1))
    grad = jax.jit(jax.grad(L.nt_xent))(z_a, z_b, 0.1)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_prediction_losses_identical_outputs():
    p = _f32(_rand(130, 9, 6))
    _close(L.byol_loss(p, 3.0 * p), 0.0, atol=1e-6)
    _close(L.negative_cosine(p, 3.0 * p), -1.0)


@pytest.mark.parametrize(
    "fn",
    [
        L.byol_loss,
        L.negative_cosine,
        lambda q, k: L.moco_v3(q, k, 0.2),
    ],
    ids=["byol", "negative_cosine", "moco_v3"],
)
def test_no_gradient_into_target(fn):
    a, b = _f32(_rand(140, 6, 5)), _f32(_rand(141, 6, 5))
    grad_a, grad_b = jax.jit(jax.grad(fn, argnums=(0, 1)))(a, b)
    assert bool(jnp.any(grad_a != 0))
    assert bool(jnp.all(grad_b == 0))


def test_dino_and_ibot_no_gradient_into_teacher():
    student, teacher = _f32(_rand(150, 3, 4, 6)), _f32(_rand(151, 2, 4, 6))
    center = jnp.zeros(6)
    dino = lambda s, t: L.dino_loss(s, t, center, 0.1, 0.04)
    g_s, g_t = jax.jit(jax.grad(dino, argnums=(0, 1)))(student, teacher)
    assert bool(jnp.any(g_s != 0)) and bool(jnp.all(g_t == 0))

    s_patch, t_patch = _f32(_rand(152, 2, 3, 5, 6)), _f32(_rand(153, 2, 3, 5, 6))
    masks = jnp.asarray(np.random.default_rng(154).random((2, 3, 5)) < 0.5)
    ibot = lambda s, t: L.ibot_patch_loss(s, t, masks, center, 0.1, 0.04)
    g_s, g_t = jax.jit(jax.grad(ibot, argnums=(0, 1)))(s_patch, t_patch)
    assert bool(jnp.any(g_s != 0)) and bool(jnp.all(g_t == 0))


def test_moco_v3_collapse_is_2tau_log_n():
    """Equal queries and keys: every logit ties, the cross-entropy is ln N, scaled by 2τ."""
    n, tau = 16, 0.2
    same = jnp.tile(_f32(_rand(155, 1, 8)), (n, 1))
    _close(L.moco_v3(same, same, tau), 2 * tau * math.log(n))


def test_barlow_twins_collapse_is_the_dimension():
    """Equal embeddings standardise to zero, so C = 0: every diagonal term costs 1."""
    d = 6
    collapsed = jnp.tile(_f32(_rand(156, 1, d)), (16, 1))
    _close(L.barlow_twins(collapsed, collapsed, 5e-3), float(d))


def test_barlow_twins_zero_for_decorrelated_identical_embeddings():
    h2 = np.array([[1.0, 1.0], [1.0, -1.0]])
    hadamard = np.kron(np.kron(h2, h2), h2)  # 8 x 8, orthogonal columns
    z = 100.0 * hadamard[:, 1:5]  # zero-mean, mutually orthogonal, equal variance
    _close(L.barlow_twins(_f32(z), _f32(z), 5e-3), 0.0, atol=1e-6)
    # and a random pair is penalised
    assert L.barlow_twins(_f32(_rand(160, 8, 4)), _f32(_rand(161, 8, 4)), 5e-3) > 1.0


def test_vicreg_variance_and_collapse():
    wide = _f32(_rand(170, 64, 6, scale=5.0))
    assert float(L.vicreg_terms(wide, wide + 0.1).variance) == 0.0

    collapsed = jnp.tile(_f32(_rand(171, 1, 6)), (16, 1))
    terms = L.vicreg_terms(collapsed, collapsed)
    per_branch = 1.0 - math.sqrt(1e-4)  # std = sqrt(0 + 1e-4) in every dimension
    expected_variance = per_branch / 2 + per_branch / 2
    _close(terms.variance, expected_variance)
    _close(terms.invariance, 0.0)
    _close(terms.covariance, 0.0)
    _close(L.vicreg(collapsed, collapsed), 25.0 * expected_variance)


def test_dino_excludes_same_crop_pairs():
    # One teacher (global) crop, index 0: student crop 0 is the same crop and must not
    # enter the loss, so changing it changes nothing and gets no gradient.
    teacher = [_f32(_rand(180, 4, 6))]
    student = [_f32(_rand(181 + c, 4, 6)) for c in range(3)]
    center = jnp.zeros(6)
    base = L.dino_loss(student, teacher, center, 0.1, 0.04)
    changed = L.dino_loss(
        [student[0] + _f32(_rand(190, 4, 6, scale=5.0)), *student[1:]], teacher, center, 0.1, 0.04
    )
    assert float(base) == float(changed)
    grads = jax.jit(jax.grad(lambda s: L.dino_loss(s, teacher, center, 0.1, 0.04)))(student)
    assert bool(jnp.all(grads[0] == 0))
    assert bool(jnp.any(grads[1] != 0)) and bool(jnp.any(grads[2] != 0))
    # Changing a crop that does pair with the teacher does change the loss.
    other = L.dino_loss(
        [student[0], student[1] + 1.0 * jnp.arange(6.0), student[2]], teacher, center, 0.1, 0.04
    )
    assert float(other) != float(base)


def test_dino_uniform_collapse_is_log_k():
    k = 7
    student = jnp.zeros((4, 3, k))
    teacher = jnp.full((2, 3, k), 2.5)  # uniform after the softmax, whatever the center
    _close(L.dino_loss(student, teacher, jnp.zeros(k), 0.1, 0.04), math.log(k))


def test_ibot_unmasked_images_contribute_zero():
    s, t = _f32(_rand(200, 2, 3, 5, 6)), _f32(_rand(201, 2, 3, 5, 6))
    none = jnp.zeros((2, 3, 5), bool)
    _close(L.ibot_patch_loss(s, t, none, jnp.zeros(6), 0.1, 0.04), 0.0)


def test_sinkhorn_marginals():
    b, k = 32, 8
    scores = _f32(_rand(210, b, k, scale=0.5))
    q = L.sinkhorn(scores, 0.05, 3)
    _close(q.sum(axis=1), np.ones(b), rtol=1e-5)
    converged = L.sinkhorn(scores, 0.05, 2000)
    _close(converged.sum(axis=1), np.ones(b), rtol=1e-5)
    _close(converged.sum(axis=0), np.full(k, b / k), rtol=1e-3)
    assert bool(jnp.all(converged >= 0))
    # large scores stay finite (log-domain, max subtracted)
    big = L.sinkhorn(100.0 * scores, 0.05, 3)
    assert bool(jnp.all(jnp.isfinite(big)))
    # codes are constants
    grad = jax.jit(jax.grad(lambda s: jnp.sum(L.sinkhorn(s) * jnp.arange(k))))(scores)
    assert bool(jnp.all(grad == 0))


def test_bfloat16_inputs_computed_in_float32():
    z_a, z_b = _f32(_rand(230, 8, 4)), _f32(_rand(231, 8, 4))
    out = L.nt_xent(z_a.astype(jnp.bfloat16), z_b.astype(jnp.bfloat16), 0.1)
    assert out.dtype == jnp.float32
