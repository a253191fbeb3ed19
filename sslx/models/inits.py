"""Initialisers named after the official code that draws them (PyTorch, timm, Haiku,
SimCLR's TF2), so each recipe starts where its reference starts.

PyTorch and Flax name different distributions alike: `torch.nn.init.trunc_normal_(std=.02)`
(timm, DINO, iBOT) truncates at +-2 in absolute value, i.e. at +-100 standard
deviations, so it is N(0, 0.02^2) in effect; Flax's `truncated_normal(0.02)` cuts at
+-2 standard deviations and has a standard deviation of 0.0176. A recipe starts where
its official code starts only if these are told apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jnp.ndarray]

# torch.nn.init.trunc_normal_(std=0.02): bounds +-2 absolute = +-100 std.
torch_trunc_normal = nn.initializers.truncated_normal(0.02, lower=-100.0, upper=100.0)

# PyTorch's default nn.Linear / nn.Conv2d weight (kaiming_uniform_ with a=sqrt(5)):
# U(+-1/sqrt(fan_in)), fan_in counting the receptive field of a convolution.
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# Xavier-uniform of a linear layer; MoCo v3 builds q, k and v as one Linear but
# draws each D x D third as its own matrix, which a Flax q/k/v kernel already is.
xavier_uniform = nn.initializers.xavier_uniform()


def xavier_uniform_fused_qkv(key: jax.Array, shape: tuple[int, ...],
                             dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
    """Xavier-uniform of the one D -> 3D Linear that timm's attention builds for q, k
    and v (MAE initialises it whole), for each [D, D] third: U(+-sqrt(6 / (D + 3D)))."""
    fan_in, fan_out = shape[0], 3 * shape[-1]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


# MAE / MoCo v3 initialise the patch projection as the linear layer it is: Xavier
# over (pixels in a patch) -> dim, not over the convolution's receptive field.
xavier_uniform_patch = nn.initializers.variance_scaling(
    1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=-1
)


def zero_bias(fan_in: int) -> Initializer:
    """A bias of zeros, whatever the fan-in."""
    del fan_in
    return nn.initializers.zeros


def torch_default_bias(fan_in: int) -> Initializer:
    """PyTorch's default nn.Linear / nn.Conv2d bias: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound)


class LinearInit(NamedTuple):
    """How one framework starts a Linear layer: its kernel, and its bias given the
    layer's fan-in."""

    kernel: Initializer
    bias: Callable[[int], Initializer]


# The Linear layers of the heads, by the official code they come from.
LINEAR_INITS = {
    # PyTorch's nn.Linear default: MoCo v3, SimSiam, Barlow Twins, VICReg, SwAV, solo-learn.
    "torch": LinearInit(torch_default_kernel, torch_default_bias),
    # Haiku's hk.Linear default (BYOL): N(0, 1/fan_in) cut at +-2 std, not rescaled.
    "haiku": LinearInit(nn.initializers.variance_scaling(
        0.87962566103423978 ** 2, "fan_in", "truncated_normal"), zero_bias),
    # SimCLR's tf2 LinearLayer: RandomNormal(stddev=0.01); the linear classifier of
    # MoCo's `main_lincls.py` and DINO's `eval_linear.py`: normal_(std=0.01), zero bias.
    "normal_0.01": LinearInit(nn.initializers.normal(0.01), zero_bias),
    # SimCLR's `--zero_init_logits_layer`: the fine-tuned classifier starts at zero.
    "zeros": LinearInit(nn.initializers.zeros, zero_bias),
    # timm's `_init_weights` (the DINO and iBOT heads).
    "trunc_normal": LinearInit(torch_trunc_normal, zero_bias),
}
