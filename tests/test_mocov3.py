"""MoCo v3: the key encoder gets no gradient, its momentum goes 0.99 -> 1, the heads
follow the official code (sharded runs and resumption: test_conformance.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    load_config,
)
from scipy.special import logsumexp
from test_byol import (
    check_loss_pairs_predictions_with_target_projections_of_the_other_view,
    check_recipes_build,
    check_target_gets_no_gradient,
    check_target_is_copy_then_ema,
    momentum_at,
    tiny_method,
    unit_rows,
)

RESNET = "configs/mocov3_resnet50.py"
VIT = "configs/mocov3_vits.py"


def test_recipes_build():
    check_recipes_build([RESNET, VIT, "configs/mocov3_vitb.py",
                         "configs/mocov3_resnet18_cifar10.py"])


@pytest.mark.parametrize("path", [RESNET, VIT])
def test_key_encoder_gets_no_gradient(path):
    check_target_gets_no_gradient(path)


def moco_pair_loss(q: np.ndarray, k: np.ndarray, temperature: float) -> float:
    """Alg. 1: cross-entropy of the cosine logits q_i . k_j / tau with the positive on the
    diagonal, times 2 tau (the official code's scaling)."""
    logits = unit_rows(q) @ unit_rows(k).T / temperature
    ce = np.mean(logsumexp(logits, axis=1) - np.diag(logits))
    return float(2 * temperature * ce)


def test_loss_pairs_queries_with_keys_of_the_other_view():
    temperature = load_config(RESNET).method.temperature
    check_loss_pairs_predictions_with_target_projections_of_the_other_view(
        RESNET, lambda q, k: moco_pair_loss(q, k, temperature))


def test_key_encoder_is_copy_then_ema():
    check_target_is_copy_then_ema(RESNET, base_momentum=0.99)


def test_momentum_schedule_start_middle_end():
    np.testing.assert_allclose(momentum_at(RESNET, 400, (0, 200, 400)), [0.99, 0.995, 1.0],
                               rtol=0, atol=1e-7)


def test_heads_follow_the_official_code():
    """ResNet: 2-layer projector, predictor without output BN; ViT: 3-layer projector,
    predictor with output BN; no biases anywhere, no affine output BN."""
    _, _, params, state = tiny_method(RESNET)
    assert sorted(params["projector"]) == ["bn0", "dense0", "dense1"]
    assert sorted(params["predictor"]) == ["bn0", "dense0", "dense1"]
    assert sorted(state["batch_stats"]["predictor"]) == ["bn0"]
    _, _, params, state = tiny_method(VIT)
    assert sorted(params["projector"]) == ["bn0", "bn1", "dense0", "dense1", "dense2"]
    assert sorted(state["batch_stats"]["predictor"]) == ["bn0", "bn1"]
    for head in ("projector", "predictor"):
        assert all("bias" not in layer for name, layer in params[head].items()
                   if name.startswith("dense"))
    assert "patch_embed" in params["backbone"]
    assert load_config(VIT).optim.frozen.patch_embed >= 1e9
