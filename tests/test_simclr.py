"""SimCLR: the loss is NT-Xent of the two views' projections, both views in one
BatchNorm batch; the config checks (sharded runs: test_train.py and
test_conformance.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import synthetic_batch, tiny_config
from scipy.special import logsumexp

from sslx import methods
from sslx.errors import ConfigError
from sslx.methods.base import TrainLength

RECIPE = "configs/simclr_resnet50.py"


def _nt_xent(z_a: np.ndarray, z_b: np.ndarray, temperature: float) -> float:
    """Chen et al. eq. 1: each of the 2N unit embeddings picks the other view of its image
    among the 2N - 1 others, by cosine / temperature; mean cross-entropy over the 2N."""
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z_a)
    total = 0.0
    for i in range(2 * n):
        logits = np.delete(z @ z[i], i) / temperature  # the anchor itself left out
        positive = (i + n) % (2 * n)
        total += logsumexp(logits) - logits[positive - (positive > i)]
    return total / (2 * n)


def _method(**overrides):
    config = tiny_config(RECIPE, **overrides)
    return config, methods.build(config, TrainLength(total_steps=2, steps_per_epoch=1))


def test_loss_is_nt_xent_of_the_projections_of_both_views_in_one_batch():
    config, method = _method()
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss, (new_state, metrics) = method.loss(params, state, batch, jax.random.PRNGKey(1), 0)

    both = jnp.concatenate(batch["views"])
    outputs, updates = method.network().apply({"params": params, **state}, both, train=True,
                                            mutable=["batch_stats"])
    z = np.asarray(outputs["projection"])
    z_a, z_b = z[:16], z[16:]
    temperature = config.method.temperature
    # At the official scale: tf2's mean(loss_a + loss_b), twice the mean over 2N anchors.
    assert config.method.loss_scale == 2.0
    np.testing.assert_allclose(loss, 2 * _nt_xent(z_a, z_b, temperature), rtol=1e-5)
    unit = z_a / np.linalg.norm(z_a, axis=1, keepdims=True)
    np.testing.assert_allclose(metrics["embedding_std"], unit.std(0).mean(), rtol=1e-4)
    # The running BatchNorm statistics are those of that one call on both views.
    for got, want in zip(jax.tree.leaves(new_state["batch_stats"]),
                         jax.tree.leaves(updates["batch_stats"]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Views in separate BatchNorm batches give other projections, hence another loss.
    separate = [method.network().apply({"params": params, **state}, v, train=True,
                                     mutable=["batch_stats"])[0]["projection"]
                for v in batch["views"]]
    assert abs(2 * _nt_xent(*map(np.asarray, separate), temperature) - float(loss)) > 1e-4


@pytest.mark.parametrize("overrides, message", [
    ({"views.global_crops.count": 3}, "exactly 2 views"),
    ({"method.temperature": 0.0}, r"config\.method\.temperature=0\.0"),
    ({"method.loss_scale": -1.0}, r"config\.method\.loss_scale=-1\.0"),
])
def test_config_checks(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _method(**overrides)[1].check_config()
