r"""End-to-end speed of a real run: images/s and the share of the time spent
waiting for the input pipeline.

    python bench/e2e.py --config=configs/simclr_fmnist.py [--steps 60] [--config.a=b ...]

Trains `--steps` steps of the recipe in a temporary workdir through
`sslx.train.train_and_evaluate` (the real input pipeline feeding the real step;
evaluators, checkpoints, export and lr warm-up off), then reads what the loop logged for
every interval after the first step (compiling): `images_per_sec` and
`input_wait`, the share of the time blocked on the next batch. Near 0 the step
is the bottleneck; near 1 the input starves it (see bench/input_pipeline.py).
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
_STEPS = flags.DEFINE_integer("steps", 60, "Steps to train (the first one compiles).")
_LOG_EVERY = flags.DEFINE_integer("log_every", 10, "Steps per measured interval.")


def quiet(config) -> None:
    """`config` trains only: no evaluator, no export, one checkpoint at the end, and
    no lr warm-up (which may be longer than the few steps timed; it costs nothing)."""
    config.optim.warmup_epochs = 0.0
    for name in config.evals:
        config.evals[name].enabled = False
    config.eval.export_at_end = False
    config.checkpoint.every_steps = 10**9


def summarise(records: list[dict], batch_size: int) -> dict[str, float]:
    """images/s and input wait over the logged intervals (the loop times each from the
    previous log point, the first from step 1), weighted by their seconds."""
    start, steps, seconds, waited = 1, 0, 0.0, 0.0
    for record in records:
        if "input_wait" in record:
            interval = (record["step"] - start) * record["step_time"]
            steps, start = steps + record["step"] - start, record["step"]
            seconds += interval
            waited += interval * record["input_wait"]
    if not seconds:
        raise SystemExit("e2e.py: no timed interval; raise --steps above --log_every")
    return {"measured_steps": steps, "measured_s": seconds,
            "images_per_s": steps * batch_size / seconds, "input_wait": waited / seconds}


def readable(result: dict) -> str:
    """The human-readable line after the JSON one."""
    return (f"{result['config']} {result['model']} batch {result['batch_size']}: "
            f"{result['images_per_s']:.1f} images/s end to end, {result['input_wait']:.1%} "
            f"of the time waiting for input ({result['measured_steps']} measured steps, "
            f"{result['wall_s']:.0f} s wall with compile)")


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None:
        sys.exit("e2e.py: --config is required")
    logging.set_verbosity(logging.WARNING)
    import jax

    from sslx import train

    config = _CONFIG.value
    config.train.steps = _STEPS.value
    config.train.log_every = _LOG_EVERY.value
    quiet(config)
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        train.train_and_evaluate(config, workdir)
        wall = time.perf_counter() - start
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    result = {"config": config.method.name, "model": config.model.name,
              "batch_size": config.train.batch_size, "steps": _STEPS.value,
              "device_kind": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
              "data_threads": config.data.threads, "wall_s": wall,
              **summarise(records, config.train.batch_size),
              "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(result))
    print(readable(result))


if __name__ == "__main__":
    app.run(main)
