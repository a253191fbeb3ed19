r"""Measured peak matmul FLOP/s of the default jax device: the denominator of MFU.

    python bench/matmul_peak.py [--size 4096] [--repeats 5]

A square [n, n] @ [n, n] matmul under jit costs 2 n^3 FLOPs; the best of several
timed runs (after a compile-and-warm-up run) gives the peak the device actually
reaches, which is a fairer MFU denominator than a datasheet number (and the only
one on a CPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp

# Matmul side per platform: large enough to saturate the device, small enough to
# finish in seconds on a 2-core CPU.
_DEFAULT_SIZE = {"cpu": 2048, "gpu": 8192, "tpu": 8192}


def default_size() -> int:
    return _DEFAULT_SIZE.get(jax.default_backend(), 4096)


@functools.cache
def measure_peak(dtype: str | jnp.dtype = "float32", size: int | None = None,
                 repeats: int = 5) -> float:
    """Best achieved FLOP/s of an [n, n] @ [n, n] jitted matmul in `dtype` on the
    default device (the result is cached per process)."""
    n = size or default_size()
    dtype = jnp.dtype(dtype)
    keys = jax.random.split(jax.random.PRNGKey(0))
    a, b = (jax.random.normal(k, (n, n), jnp.float32).astype(dtype) for k in keys)
    matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dtype))
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=None, help="matmul side n")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = jax.devices()[0]
    result = {"device_kind": device.device_kind, "platform": device.platform,
              "size": args.size or default_size()}
    for dtype in ("float32", "bfloat16"):
        result[f"peak_tflops_{dtype}"] = measure_peak(dtype, args.size, args.repeats) / 1e12
    print(json.dumps(result))
    print(f"{device.device_kind}: matmul peak {result['peak_tflops_float32']:.3f} TFLOP/s f32, "
          f"{result['peak_tflops_bfloat16']:.3f} TFLOP/s bf16 (n={result['size']})")


if __name__ == "__main__":
    main()
