"""The benchmark scripts of bench/ run in a smoke size, so they never rot (their
figures are never asserted: speed is measured, not tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import REPO


def _bench(script: str, *args: str) -> dict:
    """`python bench/SCRIPT ARGS` in a new process on one CPU device; its JSON line."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}
    result = subprocess.run([sys.executable, os.path.join("bench", script), *args], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))


def test_resume_bench():
    result = _bench("resume.py", "--examples=2000", "--epoch=3", "--batch=64")
    assert result["late_step"] == 3 * 31 + 15 and result["resume_s"] > 0


def test_checkpoint_save_bench():
    result = _bench("checkpoint_save.py", "--config=configs/simclr_fmnist.py",
                    "--config.model.width=8", "--repeats=1")
    assert result["params"] > 0 and result["saves"][0]["bytes"] > 0


def test_e2e_bench():
    result = _bench("e2e.py", "--config=configs/simclr_fmnist.py", "--steps=4", "--log_every=2",
                    "--config.model.name=vit_t", "--config.model.patch_size=4",
                    "--config.model.depth=2", "--config.train.batch_size=16")
    assert result["measured_steps"] == 3 and 0 <= result["input_wait"] <= 1
