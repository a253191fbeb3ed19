"""The CPU convolution (`sslx.models.cpu_conv`): XLA's forward and gradients, to
float tolerance, for the convolution shapes the ResNets use where it takes over;
every other convolution is XLA's own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sslx.models import cpu_conv
from sslx.models.resnet import ResNet

NHWC = ("NHWC", "HWIO", "NHWC")


def _loss(conv, x, w, strides, padding, **kwargs):
    """A loss whose gradient reaches every output element with its own weight."""
    y = conv(x, w, strides, padding, dimension_numbers=NHWC, **kwargs)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)))


def _takes_taps(x, w, strides, padding, **kwargs) -> bool:
    jaxpr = jax.make_jaxpr(lambda x, w: cpu_conv.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=NHWC, **kwargs))(x, w)
    return "custom_vjp" in str(jaxpr)


def _arrays(batch: int, side: int, cin: int, kernel: int, cout: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(batch, side, side, cin)), jnp.float32),
            jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)) * 0.05, jnp.float32))


@pytest.mark.parametrize("kernel, strides, padding, batch", [
    (3, (1, 1), "SAME", 4),            # basic block
    (3, (2, 2), ((1, 1), (1, 1)), 6),  # first block of a stage (Flax's padding=1)
    (3, (2, 2), "SAME", 2),            # asymmetric SAME padding
    (1, (2, 2), ((0, 0), (0, 0)), 4),  # projection shortcut
    (7, (2, 2), ((3, 3), (3, 3)), 3),  # a 7x7 kernel; a batch no chunk count divides
])
def test_forward_and_gradients_equal_xlas(kernel, strides, padding, batch):
    x, w = _arrays(batch, 16, 64, kernel, 64)
    assert _takes_taps(x, w, strides, padding)
    np.testing.assert_array_equal(
        cpu_conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC),
        lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC))
    got = jax.jit(jax.grad(lambda x, w: _loss(cpu_conv.conv_general_dilated, x, w, strides,
                                              padding), argnums=(0, 1)))(x, w)
    want = jax.grad(lambda x, w: _loss(lax.conv_general_dilated, x, w, strides, padding),
                    argnums=(0, 1))(x, w)
    for g, e, name in zip(got, want, ("input", "filter"), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-3, err_msg=f"{name} gradient")


@pytest.mark.parametrize("arrays, kwargs", [
    (_arrays(2, 16, 8, 3, 8), {}),                                   # narrow
    (_arrays(2, 16, 64, 3, 64), {"rhs_dilation": (2, 2)}),           # dilated
    (_arrays(2, 16, 64, 3, 32)[:1] + _arrays(2, 16, 32, 3, 64)[1:],  # grouped
     {"feature_group_count": 2}),
])
def test_other_convolutions_are_xlas(arrays, kwargs):
    x, w = arrays
    assert not _takes_taps(x, w, (1, 1), "SAME", **kwargs)
    np.testing.assert_array_equal(
        cpu_conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, **kwargs),
        lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, **kwargs))


def test_resnets_take_it_on_cpu():
    model = ResNet(stage_sizes=(1,), width=64, stem="cifar")
    x = jnp.zeros((2, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    jaxpr = str(jax.make_jaxpr(lambda x: model.apply(variables, x, train=False))(x))
    # The block's two 3x3 convolutions; the 3-channel stem stays XLA's.
    assert (jaxpr.count("custom_vjp_call"), jaxpr.count("conv_general_dilated")) == (2, 3)
