"""The CPU convolution (`sslx.models.cpu_conv`): XLA's forward and gradients, to
float tolerance, for every convolution shape the ResNets use; anything else is
XLA's own convolution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sslx.models import cpu_conv
from sslx.models.resnet import ResNet

NHWC = ("NHWC", "HWIO", "NHWC")


def _loss(conv, x, w, padding, strides, **kwargs):
    """A loss whose gradient reaches every output element with its own weight."""
    y = conv(x, w, strides, padding, dimension_numbers=NHWC, **kwargs)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)))


@pytest.mark.parametrize("kernel, strides, padding, batch", [
    (3, (1, 1), "SAME", 8),            # basic block
    (3, (2, 2), ((1, 1), (1, 1)), 6),  # first block of a stage (Flax's padding=1)
    (1, (2, 2), ((0, 0), (0, 0)), 4),  # projection shortcut
    (7, (2, 2), ((3, 3), (3, 3)), 3),  # ImageNet stem; a batch no chunk count divides
    (3, (2, 2), "SAME", 2),            # asymmetric SAME padding
])
def test_forward_and_gradients_equal_xlas(kernel, strides, padding, batch):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, 12, 12, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 5, 7)) * 0.1, jnp.float32)
    args = (x, w, padding, strides)
    np.testing.assert_array_equal(
        cpu_conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC),
        lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC))
    got = jax.jit(jax.grad(lambda x, w: _loss(cpu_conv.conv_general_dilated, x, w, *args[2:]),
                           argnums=(0, 1)))(x, w)
    want = jax.grad(lambda x, w: _loss(lax.conv_general_dilated, x, w, *args[2:]),
                    argnums=(0, 1))(x, w)
    for g, e, name in zip(got, want, ("input", "filter"), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=f"{name} gradient")


def test_other_convolutions_are_xlas():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
    kwargs = dict(dimension_numbers=NHWC, feature_group_count=2, rhs_dilation=(2, 2))
    jaxpr = jax.make_jaxpr(lambda x, w: cpu_conv.conv_general_dilated(
        x, w, (1, 1), "SAME", **kwargs))(x, w)
    assert "custom_vjp" not in str(jaxpr)
    np.testing.assert_array_equal(
        cpu_conv.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs),
        lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs))


def test_resnets_take_it_on_cpu():
    model = ResNet(stage_sizes=(1, 1), width=4, stem="cifar")
    x = jnp.zeros((2, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    jaxpr = str(jax.make_jaxpr(lambda x: model.apply(variables, x, train=False))(x))
    # The stem, two convs in the first block, two and the projection in the second.
    assert jaxpr.count("custom_vjp_call") == jaxpr.count("conv_general_dilated") == 6
