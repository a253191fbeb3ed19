"""Self-supervised losses as pure functions over arrays.

Every function takes raw network outputs (projections, predictions, prototype or
head logits), casts them to float32, normalises them the way its paper does and
returns a scalar. No Flax state: centers, queues and temperatures come in as
arguments, so a method can jit, shard and differentiate them freely. Targets that
the papers treat as constants (BYOL/SimSiam targets, MoCo keys, DINO/iBOT teacher
outputs, SwAV codes) are wrapped in `jax.lax.stop_gradient` here, not by callers.

Multi-view inputs (DINO, iBOT, SwAV) are a sequence of per-crop arrays or one
stacked array with a leading crop axis; all crops share the batch size.

Because a method's jitted step sees the global batch, every batch statistic here
(negatives, batch normalisation, centers, Sinkhorn marginals) is global across
devices and hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

CropArrays = Sequence[ArrayLike] | jax.Array

# Logit given to excluded entries (self-similarity in NT-Xent): exp() underflows to
# exactly 0, and unlike -inf it cannot produce 0 * inf = nan in a soft cross-entropy.
_MASKED_LOGIT = -1e9


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _f32(x: ArrayLike) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _stack_crops(x: CropArrays) -> jax.Array:
    """[n_crops, ...] float32 from a sequence of per-crop arrays or a stacked array."""
    if isinstance(x, (list, tuple)):
        return jnp.stack([_f32(a) for a in x])
    return _f32(x)


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along the last axis (torch's F.normalize)."""
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def _cosine(p: jax.Array, z: jax.Array) -> jax.Array:
    """Row-wise cosine similarity [N] of float32 casts of [N, D] inputs."""
    return jnp.sum(_l2_normalize(_f32(p)) * _l2_normalize(_f32(z)), axis=-1)


def _cross_entropy_hard(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-row cross-entropy −log softmax(logits)[label]; logits [..., K], labels [...]."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def _cross_entropy_soft(target_probs: jax.Array, logits: jax.Array) -> jax.Array:
    """Per-row cross-entropy −Σ_k q_k log softmax(logits)_k over the last axis."""
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _off_diagonal(m: jax.Array) -> jax.Array:
    """The square matrix with its diagonal zeroed."""
    return m * (1.0 - jnp.eye(m.shape[0], dtype=m.dtype))


def _teacher_probs(
    teacher_logits: jax.Array, center: ArrayLike, temperature: ArrayLike
) -> jax.Array:
    """DINO/iBOT teacher targets: centred, sharpened softmax, treated as constants."""
    centred = teacher_logits - _f32(center)
    return jax.lax.stop_gradient(jax.nn.softmax(centred / temperature, axis=-1))


def _cross_view_cross_entropy(targets: jax.Array, student_logits: jax.Array) -> jax.Array:
    """Mean over crop pairs (target crop i, student crop v), v ≠ i, of
    mean_b cross-entropy(targets[i, b], student_logits[v, b]).

    targets [n_t, B, K] are probabilities of the first n_t crops; student_logits
    [n_s, B, K] are already temperature-scaled. DINO and SwAV's swapped prediction
    are both this average (SwAV's mean over v then over i has equal-sized groups).
    """
    n_t, n_s = targets.shape[0], student_logits.shape[0]
    if targets.shape[1:] != student_logits.shape[1:]:
        raise ValueError(
            f"target crops {targets.shape[1:]} and student crops {student_logits.shape[1:]} "
            "must share [batch, K]"
        )
    if n_t > n_s:
        raise ValueError(f"{n_t} target crops but only {n_s} student crops")
    if n_s < 2:
        raise ValueError("cross-view losses need at least 2 student crops (same-crop pairs are "
                         "excluded)")
    log_probs = jax.nn.log_softmax(student_logits, axis=-1)
    # pair_ce[i, v] = mean_b −Σ_k targets[i, b, k] log_probs[v, b, k]
    pair_ce = -jnp.einsum("ibk,vbk->iv", targets, log_probs) / targets.shape[1]
    other = 1.0 - jnp.eye(n_t, n_s, dtype=pair_ce.dtype)
    return jnp.sum(pair_ce * other) / (n_t * n_s - n_t)


# ---------------------------------------------------------------------------
# Contrastive
# ---------------------------------------------------------------------------


def nt_xent(z_a: ArrayLike, z_b: ArrayLike, temperature: ArrayLike) -> jax.Array:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1).

    The 2N ℓ2-normalised embeddings are anchors; each anchor's positive is the
    other view of its image and the remaining 2N−2 embeddings are negatives
    (self-similarity excluded). Returns the mean cross-entropy over the 2N anchors.
    """
    z = _l2_normalize(jnp.concatenate([_f32(z_a), _f32(z_b)], axis=0))
    two_n = z.shape[0]
    n = two_n // 2
    logits = (z @ z.T) / temperature
    logits = jnp.where(jnp.eye(two_n, dtype=bool), _MASKED_LOGIT, logits)
    positives = (jnp.arange(two_n) + n) % two_n
    return jnp.mean(_cross_entropy_hard(logits, positives))


def moco_v3(q: ArrayLike, k: ArrayLike, temperature: ArrayLike) -> jax.Array:
    """MoCo v3's contrastive loss (Chen, Xie & He 2021, Alg. 1), one direction.

    Logits are cos(q_i, k_j)/τ over the batch with the positive on the diagonal;
    the cross-entropy is scaled by 2τ as in the official code. Keys are constants.
    Methods symmetrise: moco_v3(q1, k2, τ) + moco_v3(q2, k1, τ).
    """
    q = _l2_normalize(_f32(q))
    k = jax.lax.stop_gradient(_l2_normalize(_f32(k)))
    logits = (q @ k.T) / temperature
    ce = jnp.mean(_cross_entropy_hard(logits, jnp.arange(q.shape[0])))
    return ce * (2.0 * temperature)


def nearest_neighbour_index(z: ArrayLike, support: ArrayLike) -> jax.Array:
    """For each row of z [N, D], the index [N] of the row of the support set
    [S, D] with the largest cosine similarity."""
    return jnp.argmax(_l2_normalize(_f32(z)) @ _l2_normalize(_f32(support)).T, axis=-1)


def nearest_neighbour(z: ArrayLike, support: ArrayLike) -> jax.Array:
    """NNCLR's NN(z, Q) (Dwibedi et al. 2021, eq. 2): for each row of z [N, D], the
    row of the support set Q [S, D] with the largest cosine similarity,
    ℓ2-normalised, as a constant [N, D]."""
    neighbours = _l2_normalize(_f32(support))[nearest_neighbour_index(z, support)]
    return jax.lax.stop_gradient(neighbours)


def nnclr_loss(
    z_a: ArrayLike,
    z_b: ArrayLike,
    support: ArrayLike,
    temperature: ArrayLike,
    p_a: ArrayLike | None = None,
    p_b: ArrayLike | None = None,
) -> jax.Array:
    """NNCLR's symmetric loss (Dwibedi et al. 2021, eq. 2-3, with the predictor of Sec. 4).

    The positive of image i is NN(z_a[i]) from the support set, the other images'
    predictions p_b are its negatives: ½[CE(NN(z_a)·p_bᵀ/τ) + CE(NN(z_b)·p_aᵀ/τ)]
    over cosine similarities, the positive on the diagonal. Predictions default
    to the projections (NNCLR without a predictor). Nearest neighbours are constants.
    """
    p_a = z_a if p_a is None else p_a
    p_b = z_b if p_b is None else p_b

    def one_side(z: ArrayLike, p: ArrayLike) -> jax.Array:
        logits = (nearest_neighbour(z, support) @ _l2_normalize(_f32(p)).T) / temperature
        return jnp.mean(_cross_entropy_hard(logits, jnp.arange(logits.shape[0])))

    return 0.5 * (one_side(z_a, p_b) + one_side(z_b, p_a))


# ---------------------------------------------------------------------------
# Prediction of a stop-gradient target
# ---------------------------------------------------------------------------


def byol_loss(p: ArrayLike, z: ArrayLike) -> jax.Array:
    """BYOL's regression loss (Grill et al. 2020, eq. 2): mean_b 2 − 2·cos(p, z).

    `z` is the target network's projection and gets no gradient.
    """
    return jnp.mean(2.0 - 2.0 * _cosine(p, jax.lax.stop_gradient(z)))


def negative_cosine(p: ArrayLike, z: ArrayLike) -> jax.Array:
    """SimSiam's D(p, stopgrad(z)) = −mean_b cos(p, z) (Chen & He 2021, eq. 1/3)."""
    return -jnp.mean(_cosine(p, jax.lax.stop_gradient(z)))


# ---------------------------------------------------------------------------
# Redundancy reduction / variance-covariance regularisation
# ---------------------------------------------------------------------------


def _batch_standardize(z: jax.Array, eps: float = 1e-5) -> jax.Array:
    """BatchNorm1d(affine=False) in training mode: biased variance over the batch."""
    mean = jnp.mean(z, axis=0)
    var = jnp.mean(jnp.square(z - mean), axis=0)
    return (z - mean) * jax.lax.rsqrt(var + eps)


def barlow_twins(z_a: ArrayLike, z_b: ArrayLike, lambd: ArrayLike) -> jax.Array:
    """Barlow Twins (Zbontar et al. 2021, eq. 1).

    With each batch standardised per dimension, C = z_aᵀ z_b / N and the loss is
    Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²: invariance on the diagonal, redundancy
    reduction off it.
    """
    a = _batch_standardize(_f32(z_a))
    b = _batch_standardize(_f32(z_b))
    c = (a.T @ b) / a.shape[0]
    on_diag = jnp.sum(jnp.square(1.0 - jnp.diagonal(c)))
    off_diag = jnp.sum(jnp.square(_off_diagonal(c)))
    return on_diag + lambd * off_diag


class VICRegTerms(NamedTuple):
    """VICReg's three unweighted terms (a pytree, so a method can log them)."""

    invariance: jax.Array
    variance: jax.Array
    covariance: jax.Array


def _variance_hinge(z: jax.Array, eps: float = 1e-4) -> jax.Array:
    """mean_d relu(1 − sqrt(Var_b z_d + eps)), unbiased variance as torch's `.var`."""
    std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
    return jnp.mean(jax.nn.relu(1.0 - std))


def _covariance_penalty(z: jax.Array) -> jax.Array:
    """Σ_{i≠j} Cov(z)_ij² / D with the unbiased covariance of the centred batch."""
    centred = z - jnp.mean(z, axis=0)
    cov = (centred.T @ centred) / (z.shape[0] - 1)
    return jnp.sum(jnp.square(_off_diagonal(cov))) / z.shape[1]


def vicreg_terms(z_a: ArrayLike, z_b: ArrayLike) -> VICRegTerms:
    """VICReg's terms (Bardes, Ponce & LeCun 2022, eq. 1-6, as in the official code).

    invariance: MSE between the branches, averaged over all elements;
    variance: the per-branch std hinge, halved and summed over the two branches;
    covariance: per-branch squared off-diagonal covariance / D, summed over branches.
    """
    a, b = _f32(z_a), _f32(z_b)
    return VICRegTerms(
        invariance=jnp.mean(jnp.square(a - b)),
        variance=0.5 * (_variance_hinge(a) + _variance_hinge(b)),
        covariance=_covariance_penalty(a) + _covariance_penalty(b),
    )


def vicreg(
    z_a: ArrayLike,
    z_b: ArrayLike,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
) -> jax.Array:
    """VICReg loss: the weighted sum of `vicreg_terms` (defaults: the paper's 25/25/1)."""
    terms = vicreg_terms(z_a, z_b)
    return (
        sim_weight * terms.invariance
        + var_weight * terms.variance
        + cov_weight * terms.covariance
    )


# ---------------------------------------------------------------------------
# Self-distillation (DINO, iBOT)
# ---------------------------------------------------------------------------


def dino_loss(
    student_logits: CropArrays,
    teacher_logits: CropArrays,
    center: ArrayLike,
    student_temp: ArrayLike,
    teacher_temp: ArrayLike,
) -> jax.Array:
    """DINO's self-distillation loss (Caron et al. 2021, eq. 3 and Alg. 1).

    student_logits: all crops, [n_crops, B, K]; teacher_logits: the global crops,
    [n_global, B, K], teacher crop i being the same image crop as student crop i.
    Teacher targets softmax((t − center)/teacher_temp) are constants; the loss is
    the mean over pairs (teacher i, student v ≠ i) of mean_b −Σ_k q log_softmax(s/τ_s).
    """
    targets = _teacher_probs(_stack_crops(teacher_logits), center, teacher_temp)
    return _cross_view_cross_entropy(targets, _stack_crops(student_logits) / student_temp)


def update_center(
    center: ArrayLike, teacher_logits: CropArrays, momentum: ArrayLike
) -> jax.Array:
    """DINO's center EMA: center·m + (1 − m)·mean of the teacher logits.

    The mean runs over every axis but the last (crops, global batch, and patches
    for iBOT's patch center). Convention: the center is a [K] vector; the result
    keeps the shape of `center`, so a DINO-style [1, K] center also works.
    Pure: returns the new center and never receives gradients.
    """
    center = _f32(center)
    logits = jax.lax.stop_gradient(_stack_crops(teacher_logits))
    batch_mean = jnp.mean(logits.reshape(-1, logits.shape[-1]), axis=0)
    return center * momentum + batch_mean.reshape(center.shape) * (1.0 - momentum)


def ibot_patch_loss(
    student_patch_logits: CropArrays,
    teacher_patch_logits: CropArrays,
    masks: CropArrays,
    center: ArrayLike,
    student_temp: ArrayLike,
    teacher_temp: ArrayLike,
) -> jax.Array:
    """iBOT's masked-image-modelling loss (Zhou et al. 2022, eq. 2 / official code).

    Per global crop c: the student saw crop c with masked patches, the teacher saw
    it unmasked; logits are [B, N, K] and masks [B, N] (True = masked). Per image,
    the cross-entropy between the centred, sharpened teacher softmax (constant) and
    the student log-softmax is averaged over masked patches (count clamped to ≥ 1,
    so unmasked images give 0), then averaged over images and over crops.
    """
    student = _stack_crops(student_patch_logits)
    teacher = _stack_crops(teacher_patch_logits)
    mask = _stack_crops(masks)
    if student.shape != teacher.shape or mask.shape != student.shape[:-1]:
        raise ValueError(
            f"student {student.shape}, teacher {teacher.shape} must be [crops, B, N, K] and "
            f"masks {mask.shape} [crops, B, N]"
        )
    targets = _teacher_probs(teacher, center, teacher_temp)
    ce = _cross_entropy_soft(targets, student / student_temp)  # [crops, B, N]
    per_image = jnp.sum(ce * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
    return jnp.mean(per_image)


# ---------------------------------------------------------------------------
# Online clustering (SwAV)
# ---------------------------------------------------------------------------


def sinkhorn(scores: ArrayLike, epsilon: float = 0.05, iterations: int = 3) -> jax.Array:
    """SwAV's Sinkhorn-Knopp codes (Caron et al. 2020, eq. 3; `distributed_sinkhorn`).

    scores: [B, K] prototype scores of the full (global) batch. Starting from
    exp(scores/ε), each iteration rescales prototype totals to 1/K then sample
    totals to 1/B; the result is multiplied by B (the official code's convention),
    so every row of the returned Q [B, K] sums to 1 and, once converged, every
    column sums to B/K (equipartition). Computed in the log domain (logsumexp
    subtracts the max), which equals the official code without its overflow.
    Returned as a constant.
    """
    log_q = _f32(scores) / epsilon
    b, k = log_q.shape

    def step(_, log_q):
        log_q = log_q - jax.nn.logsumexp(log_q, axis=0, keepdims=True) - jnp.log(k)
        return log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - jnp.log(b)

    log_q = jax.lax.fori_loop(0, iterations, step, log_q)
    return jax.lax.stop_gradient(jnp.exp(log_q) * b)


def swav_loss(
    scores: CropArrays,
    num_assign_crops: int,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    queue_scores: CropArrays | None = None,
) -> jax.Array:
    """SwAV's swapped prediction loss (Caron et al. 2020, eq. 1-2; official code).

    scores: [n_crops, B, K] prototype scores of all crops. Codes come from
    `sinkhorn` on each of the first `num_assign_crops` crops; with a queue, that
    crop's queue scores [Q, K] are stacked before the batch for Sinkhorn and their
    rows dropped afterwards. `queue_scores` is one [Q, K] array shared by all
    assigned crops, or one per assigned crop ([num_assign_crops, Q, K] or a
    sequence), as SwAV keeps one queue per assigned crop. For each assigned crop i,
    the loss is the mean over crops v ≠ i of −mean_b Σ_k q_i log_softmax(s_v/τ),
    then averaged over i.
    """
    crops = _stack_crops(scores)
    batch = crops.shape[1]
    if not 1 <= num_assign_crops <= crops.shape[0]:
        raise ValueError(f"num_assign_crops={num_assign_crops} must be in [1, {crops.shape[0]}]")
    queues = None
    if queue_scores is not None:
        queues = _stack_crops(queue_scores)
        if queues.ndim == 2:
            queues = jnp.broadcast_to(queues, (num_assign_crops, *queues.shape))
        if queues.shape[0] != num_assign_crops or queues.shape[-1] != crops.shape[-1]:
            raise ValueError(
                f"queue_scores {queues.shape} must be [Q, K] or [{num_assign_crops}, Q, K] "
                f"with K={crops.shape[-1]}"
            )
    codes = []
    for i in range(num_assign_crops):
        crop_scores = crops[i]
        if queues is not None:
            crop_scores = jnp.concatenate([queues[i], crop_scores], axis=0)
        codes.append(sinkhorn(crop_scores, epsilon, iterations)[-batch:])
    return _cross_view_cross_entropy(jnp.stack(codes), crops / temperature)


# ---------------------------------------------------------------------------
# Masked image modelling
# ---------------------------------------------------------------------------

# MAE's `forward_loss`: the variance of a patch's pixels is kept off zero by this.
NORM_PIX_EPS = 1e-6


def normalized_patches(patches: ArrayLike) -> jax.Array:
    """Each patch's pixels [..., P] minus their mean, over their standard deviation,
    as MAE's `norm_pix_loss` targets (torch's `var` is the unbiased one, ddof 1)."""
    patches = _f32(patches)
    mean = jnp.mean(patches, axis=-1, keepdims=True)
    var = jnp.var(patches, axis=-1, keepdims=True, ddof=1)
    return (patches - mean) / jnp.sqrt(var + NORM_PIX_EPS)


def mae_loss(pred: ArrayLike, target_patches: ArrayLike, mask: ArrayLike,
             norm_pix: bool) -> jax.Array:
    """MAE (He et al. 2022, Sec. 3): the mean squared error per patch between the
    decoder's prediction [B, N, P] and the image's patches [B, N, P]
    (`models.vit.patchify`), averaged over the masked patches only (mask [B, N],
    True = masked). With `norm_pix` the targets are `normalized_patches`."""
    target = normalized_patches(target_patches) if norm_pix else _f32(target_patches)
    per_patch = jnp.mean(jnp.square(_f32(pred) - target), axis=-1)
    mask = _f32(mask)
    return jnp.sum(per_patch * mask) / jnp.sum(mask)


# ---------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------


def embedding_std(z: ArrayLike) -> jax.Array:
    """Collapse monitor from SimSiam (Chen & He 2021, Fig. 2): the per-dimension
    std over the batch (biased) of ℓ2-normalised embeddings, averaged over
    dimensions. About 1/sqrt(D) for well-spread embeddings, 0 when collapsed."""
    return jnp.mean(jnp.std(_l2_normalize(_f32(z)), axis=0))
