"""A convolution for XLA:CPU: the same forward and input gradient as
`lax.conv_general_dilated`, and a filter gradient computed as one batched matrix
product per kernel tap.

XLA:CPU lowers a convolution's filter gradient to a convolution whose contraction
runs over the batch and the image, which it computes 2-5 times slower than the
forward convolution of the same FLOPs (bench/README.md, "ResNet steps on CPU"):
for a ResNet most of the step. Written as kh*kw matrix products of the strided,
shifted input against the output gradient, each split over a few batch chunks
summed at the end (so every core has a block of its own), the same FLOPs run at
close to the forward convolution's speed. The result equals XLA's up to float
summation order. `for_backend` picks it on CPU only: GPUs and TPUs have fast
filter gradients of their own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
# Where the tap products beat XLA's filter gradient (bench/README.md): at least 64
# channels in and out. Narrower layers (the demo's width-8 ResNet) keep XLA's, which
# is up to 3 times faster there.
MIN_CHANNELS = 64
_CHUNKS = 4  # batch chunks of each tap's product, summed at the end (4 was fastest of 4, 8, 16)


def for_backend() -> Callable:
    """The `conv_general_dilated` for Flax's `nn.Conv` on the default backend."""
    return conv_general_dilated if jax.default_backend() == "cpu" else lax.conv_general_dilated


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
    """`lax.conv_general_dilated`'s signature. NHWC/HWIO 2-D convolutions without
    dilation or groups, wide enough for the tap products to pay (`_taps_pay`), take
    `_conv`; anything else is `lax.conv_general_dilated`."""
    plain = (lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1
             and preferred_element_type is None
             and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    if plain:
        strides = tuple(int(s) for s in window_strides)
        pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
                if isinstance(padding, str) else padding)
        pads = tuple((int(low), int(high)) for low, high in pads)
        if all(p >= 0 for pair in pads for p in pair) and _taps_pay(rhs.shape):
            return _conv(lhs, rhs, strides, pads, precision)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)


def _taps_pay(rhs_shape: Sequence[int]) -> bool:
    """Whether the tap products are the faster filter gradient for this kernel."""
    return min(rhs_shape[2], rhs_shape[3]) >= MIN_CHANNELS


def _lax_conv(x, w, strides, pads, precision):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                    precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
    return _lax_conv(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
    return _lax_conv(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, residuals, grad):
    x, w = residuals
    _, input_vjp = jax.vjp(lambda x: _lax_conv(x, w, strides, pads, precision), x)
    (input_grad,) = input_vjp(grad)
    return input_grad, filter_grad(x, grad, w.shape, strides, pads, precision).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def filter_grad(x: jax.Array, grad: jax.Array, kernel_shape: Sequence[int],
                strides: Sequence[int], pads: Sequence[tuple[int, int]],
                precision=None) -> jax.Array:
    """d(loss)/d(kernel) [kh, kw, cin, cout] of an NHWC convolution of `x` whose
    output gradient is `grad` [B, ho, wo, cout]: for each tap (i, j) the input
    window it saw (shifted by (i, j), strided) times `grad`, contracted over batch
    and positions, in float32."""
    kh, kw, cin, cout = kernel_shape
    batch, ho, wo, _ = grad.shape
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    chunks = math.gcd(batch, _CHUNKS)
    grad = grad.reshape(chunks, -1, cout)
    taps = []
    for i in range(kh):
        for j in range(kw):
            window = lax.slice(padded, (0, i, j, 0),
                               (batch, i + (ho - 1) * strides[0] + 1,
                                j + (wo - 1) * strides[1] + 1, cin),
                               (1, strides[0], strides[1], 1))
            per_chunk = jnp.einsum("pkc,pko->pco", window.reshape(chunks, -1, cin), grad,
                                   precision=precision, preferred_element_type=jnp.float32)
            taps.append(per_chunk.sum(axis=0))
    return jnp.stack(taps).reshape(kh, kw, cin, cout)
