"""NNCLR's nearest-neighbour lookup and loss against plain float64 numpy
references (explicit loops) and their properties: the true nearest neighbour by
cosine similarity, and no gradient into the neighbours."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslx import losses

nnclr_loss = jax.jit(losses.nnclr_loss)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_nnclr_side(z, p, support, temperature):
    """mean_i −log softmax_j(NN(z_i)·p_j/τ)[i], cosine similarities, loops."""
    support = _unit(support.astype(np.float64))
    total = 0.0
    for i in range(z.shape[0]):
        zi = _unit(z[i].astype(np.float64))
        nn = support[int(np.argmax([zi @ s for s in support]))]
        logits = np.array([nn @ _unit(p[j].astype(np.float64)) for j in range(p.shape[0])])
        logits = logits / temperature
        total += -(logits[i] - np.log(np.sum(np.exp(logits))))
    return total / z.shape[0]


def test_nearest_neighbour_is_the_most_similar_direction():
    # Row 1 is nearest to z[0] in euclidean distance, row 2 in direction (cosine).
    support = np.array([[-1.0, 0.0], [0.9, 0.9], [5.0, 0.5], [0.0, -2.0]], np.float32)
    z = np.array([[1.0, 0.0], [0.1, -3.0], [-0.5, 0.1]], np.float32)
    np.testing.assert_array_equal(losses.nearest_neighbour_index(z, support), [2, 3, 0])
    np.testing.assert_allclose(losses.nearest_neighbour(z, support),
                               _unit(support[[2, 3, 0]]), rtol=1e-6)
    rng = np.random.default_rng(0)
    support, z = rng.normal(size=(64, 8)), rng.normal(size=(16, 8))
    expected = [int(np.argmax([_unit(zi) @ _unit(s) for s in support])) for zi in z]
    np.testing.assert_array_equal(losses.nearest_neighbour_index(z, support), expected)


def test_nnclr_loss_matches_numpy():
    rng = np.random.default_rng(1)
    z_a, z_b, p_a, p_b = (rng.normal(size=(6, 5)).astype(np.float32) for _ in range(4))
    support = rng.normal(size=(20, 5)).astype(np.float32) * 3.0
    expected = 0.5 * (_np_nnclr_side(z_a, p_b, support, 0.1)
                      + _np_nnclr_side(z_b, p_a, support, 0.1))
    np.testing.assert_allclose(nnclr_loss(z_a, z_b, support, 0.1, p_a, p_b), expected,
                               rtol=1e-5)
    # Without a predictor the projections are the predictions.
    np.testing.assert_allclose(nnclr_loss(z_a, z_b, support, 0.5),
                               nnclr_loss(z_a, z_b, support, 0.5, z_a, z_b), rtol=1e-6)


def test_nnclr_positive_is_the_neighbour_of_the_other_view():
    """When p_b[i] points exactly at NN(z_a[i]) and away from the others, the
    loss is ~0 in that direction: the positive pairs NN(z_a) with p_b."""
    support = np.eye(4, dtype=np.float32)
    z = np.eye(4, dtype=np.float32) + 0.1
    p = 10.0 * np.eye(4, dtype=np.float32) - 1.0
    assert float(nnclr_loss(z, z, support, 0.01, p, p)) < 1e-6


def test_no_gradient_into_projections_through_the_neighbours():
    rng = np.random.default_rng(2)
    z_a, z_b, p_a, p_b = (jnp.asarray(rng.normal(size=(4, 3)), jnp.float32) for _ in range(4))
    support = jnp.asarray(rng.normal(size=(10, 3)), jnp.float32)
    grads = jax.grad(losses.nnclr_loss, argnums=(0, 1, 2, 4, 5))(
        z_a, z_b, support, 0.1, p_a, p_b)
    for g in grads[:3]:
        np.testing.assert_array_equal(g, 0.0)
    assert all(float(jnp.abs(g).sum()) > 0 for g in grads[3:])
