"""Timing shared by the PyTorch peer benchmarks: the same protocol as
bench/train_step.py (untimed warm-up steps, then the median of timed steps on one
fixed random batch), so the two figures compare the step, not the input."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable

import torch


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every peer benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--batch_size", type=int, required=True)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch intra-op threads (default: all cores)")
    return p


def time_steps(step: Callable[[], None], args: argparse.Namespace, name: str) -> None:
    """Runs `step` warmup + steps times and prints one JSON line, then a readable one."""
    torch.set_num_threads(args.threads)
    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    step_time = statistics.median(seconds)
    result = {"benchmark": name, "torch": torch.__version__, "threads": args.threads,
              "batch_size": args.batch_size, "step_time_s": step_time,
              "images_per_sec": args.batch_size / step_time,
              "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(result))
    print(f"{name}: {result['images_per_sec']:.2f} images/s ({step_time:.3f} s/step, "
          f"batch {args.batch_size}, {args.threads} threads, torch {torch.__version__})")
