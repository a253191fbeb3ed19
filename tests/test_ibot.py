"""iBOT: the patch loss counts masked patches only, the two centers, no gradient
into the teacher (sharded runs and resumption: test_conformance.py)."""

from __future__ import annotations

import jax
import numpy as np
from helpers import (
    synthetic_batch,
    tiny_config,
)
from scipy.special import logsumexp

from sslx import methods
from sslx.methods.base import TrainLength

RECIPE = "configs/ibot_vits16.py"


def test_patch_loss_uses_masks_and_teacher_gets_no_gradient():
    config = tiny_config(RECIPE)
    method = methods.build(config, TrainLength(total_steps=100, steps_per_epoch=10))
    method.check_config()
    batch = jax.tree.map(np.asarray, synthetic_batch(config))
    assert len(batch["masks"]) == 2 and batch["masks"][0].shape == (16, 16)
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss_fn = jax.jit(method.loss)
    rng = jax.random.PRNGKey(1)

    unmasked = {**batch, "masks": tuple(np.zeros_like(m) for m in batch["masks"])}
    loss, (new_state, metrics) = loss_fn(params, state, unmasked, rng, 0)
    assert float(metrics["patch_loss"]) == 0.0
    np.testing.assert_allclose(loss, metrics["cls_loss"], rtol=1e-6)

    loss, (new_state, metrics) = loss_fn(params, state, batch, rng, 0)
    assert float(metrics["patch_loss"]) > 0.0
    np.testing.assert_allclose(loss, metrics["cls_loss"] + metrics["patch_loss"], rtol=1e-6)
    # Both centers move towards the teacher's mean output; the patch center's mean
    # runs over patches too, so the two differ.
    assert not np.allclose(new_state["center"], 0.0)
    assert not np.allclose(new_state["patch_center"], new_state["center"])

    grads = jax.jit(jax.grad(lambda s: method.loss(params, s, batch, rng, 0)[0]))(state)
    for leaf in jax.tree.leaves(grads["teacher"]):
        assert not np.any(leaf)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x).astype(np.float64)
    return x - logsumexp(x, axis=-1, keepdims=True)


def _teacher_probs(logits, center, temperature) -> np.ndarray:
    return np.exp(_log_softmax((np.asarray(logits).astype(np.float64) - center) / temperature))


def test_loss_from_the_networks_outputs():
    """Everything the loss is made of, computed here from the networks: the student sees
    the global crops masked and the local crops whole, the teacher (moved away from the
    student) the global crops unmasked; [CLS] loss over pairs of different crops with
    `center` and the [CLS] temperature, patch loss at the masked patches of the same crop
    with `patch_center` and the patch temperature, both temperatures mid warm-up, the
    two terms weighted 0.7 and 1.3."""
    config = tiny_config(RECIPE, **{
        "model.drop_path": 0.0, "method.lambda_cls": 0.7, "method.lambda_patch": 1.3,
        "method.warmup_teacher_temp": 0.04, "method.teacher_temp": 0.06,
        "method.warmup_teacher_patch_temp": 0.03, "method.teacher_patch_temp": 0.15,
        "method.warmup_teacher_temp_epochs": 1.0})
    method = methods.build(config, TrainLength(total_steps=100, steps_per_epoch=10))
    batch = jax.tree.map(np.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    rng = np.random.default_rng(0)
    leaves, tree = jax.tree.flatten(state["teacher"]["params"])
    teacher_params = tree.unflatten([
        (x + 0.5 * np.std(x) * rng.normal(size=x.shape)).astype(x.dtype)
        for x in map(np.asarray, leaves)])
    k = config.method.out_dim
    state = {**state, "teacher": {**state["teacher"], "params": teacher_params},
             "center": rng.normal(size=k).astype(np.float32),
             "patch_center": rng.normal(size=k).astype(np.float32)}
    step = 4  # of a 10-step warm-up
    loss, (_, metrics) = jax.jit(method.loss)(params, state, batch, jax.random.PRNGKey(1), step)

    cls_temp, patch_temp = 0.04 + 0.02 * 0.4, 0.03 + 0.12 * 0.4
    student_temp = config.method.student_temp
    views, masks = batch["views"], batch["masks"]
    student, teacher = method.network(), method.network(teacher=True)
    s_global = [student.apply({"params": params}, v, train=True, mask=m)
                for v, m in zip(views[:2], masks, strict=True)]
    s_local = [student.apply({"params": params}, v, train=True, tokens=False)
               for v in views[2:]]
    t_global = [teacher.apply({"params": teacher_params}, v, train=True) for v in views[:2]]

    s_cls = [_log_softmax(np.asarray(out["projection"]) / student_temp)
             for out in s_global + s_local]
    cls_terms = []
    for i, out in enumerate(t_global):
        q = _teacher_probs(out["projection"], state["center"], cls_temp)
        cls_terms += [np.mean(-np.sum(q * s, axis=-1)) for v, s in enumerate(s_cls) if v != i]
    patch_terms = []
    for s_out, t_out, mask in zip(s_global, t_global, masks, strict=True):
        q = _teacher_probs(t_out["patch_projection"], state["patch_center"], patch_temp)
        ce = -np.sum(q * _log_softmax(np.asarray(s_out["patch_projection"]) / student_temp),
                     axis=-1)
        patch_terms.append(np.mean(np.sum(ce * mask, -1) / np.maximum(mask.sum(-1), 1)))
    cls_loss, patch_loss = np.mean(cls_terms), np.mean(patch_terms)

    np.testing.assert_allclose(metrics["teacher_temp"], cls_temp, rtol=1e-6)
    np.testing.assert_allclose(metrics["cls_loss"], cls_loss, rtol=1e-4)
    np.testing.assert_allclose(metrics["patch_loss"], patch_loss, rtol=1e-4)
    np.testing.assert_allclose(loss, 0.7 * cls_loss + 1.3 * patch_loss, rtol=1e-4)
