r"""Speed of one training step of a recipe: compile time, step time, images/s, MFU, memory.

    python bench/train_step.py --config=configs/simclr_resnet18_cifar10.py:runlocal \
        [--config.train.batch_size=512 ...] [--steps 10] [--warmup 2]

The run is built exactly as `sslx.train` builds it (`prepare`, `init_state`,
`make_train_step`) on a mesh of all local devices, and fed one fixed random
batch that is already on the devices, so the figure is the step's, not the
input pipeline's (see bench/input_pipeline.py for that). FLOPs per step come
from XLA's cost analysis of the compiled step; MFU divides the achieved FLOP/s
by the matmul peak measured by bench/matmul_peak.py on the same device.
Prints one JSON line, then a human-readable line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/x.py[:arg].")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")


def random_batch(run, seed: int = 0) -> dict:
    """A global batch with the structure the pipeline yields for the run's method:
    normal floats for views, labels 0..9, booleans (masks) true with probability 0.3."""
    import jax
    import numpy as np

    from sslx.data.pipeline import example_batch

    rng = np.random.default_rng(seed)

    def fill(leaf: np.ndarray) -> np.ndarray:
        if leaf.dtype == np.bool_:
            return rng.random(leaf.shape) < 0.3
        if np.issubdtype(leaf.dtype, np.integer):
            return (np.arange(leaf.size) % 10).reshape(leaf.shape).astype(leaf.dtype)
        return rng.normal(size=leaf.shape).astype(leaf.dtype)

    batch = example_batch(run.spec, run.config.train.batch_size,
                          inputs=run.method.inputs)
    return jax.tree.map(fill, batch)


def flops_of(compiled) -> float:
    """FLOPs of one call of a compiled program, per device (XLA cost analysis);
    NaN when the backend does not report them."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def peak_memory_bytes(device) -> tuple[int, str]:
    """Peak device memory when the backend tracks it, else the process's max RSS."""
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS"


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None:
        sys.exit("train_step.py: --config is required")
    logging.set_verbosity(logging.WARNING)  # orbax's INFO lines
    import jax
    from matmul_peak import measure_peak

    from sslx import sharding, train

    config = _CONFIG.value
    devices = jax.local_devices()
    with tempfile.TemporaryDirectory() as workdir:
        run = train.prepare(config, workdir, mesh=sharding.make_mesh(devices))
        state = run.init_state()
        batch = sharding.global_batch(random_batch(run), run.mesh)
        start = time.perf_counter()
        step = train.make_train_step(run).lower(state, batch).compile()
        compile_s = time.perf_counter() - start
        for _ in range(_WARMUP.value):
            state, _ = step(state, batch)
        jax.block_until_ready(state)
        times = []
        for _ in range(_STEPS.value):
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready((state, metrics))
            times.append(time.perf_counter() - start)
        run.checkpointer.close()

    step_s = sorted(times)[len(times) // 2]  # median
    flops = flops_of(step)  # per device
    peak = measure_peak(config.train.dtype)
    memory, memory_kind = peak_memory_bytes(devices[0])
    result = {
        "config": config.method.name, "model": config.model.name,
        "batch_size": config.train.batch_size,
        "views": [list(v.shape[1:3]) for v in batch["views"]],
        "dtype": config.train.dtype, "device_kind": devices[0].device_kind,
        "num_devices": len(devices), "compile_s": compile_s, "step_s_median": step_s,
        "step_s_min": min(times), "images_per_s": config.train.batch_size / step_s,
        "gflops_per_step": flops * len(devices) / 1e9,
        "achieved_tflops_per_device": flops / step_s / 1e12,
        "peak_tflops_per_device": peak / 1e12, "mfu": flops / step_s / peak,
        "peak_memory_bytes": memory, "memory_kind": memory_kind,
        "loss": float(metrics["loss"]),
    }
    print(json.dumps(result))
    print(f"{result['config']} {result['model']} batch {result['batch_size']} on "
          f"{len(devices)}x {result['device_kind']}: compile {compile_s:.1f} s, "
          f"step {step_s * 1e3:.1f} ms, {result['images_per_s']:.1f} images/s, "
          f"{result['gflops_per_step']:.1f} GFLOP/step, MFU {result['mfu']:.1%} "
          f"(peak {result['peak_tflops_per_device']:.3f} TFLOP/s), "
          f"memory {memory / 2**30:.2f} GiB ({memory_kind})")


if __name__ == "__main__":
    app.run(main)
