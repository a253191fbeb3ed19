"""The command line and its errors: each bad input gets one message naming the fix.
Two runs are real processes (training to its k-NN line, and a run that fails:
one `sslx:` line on stderr, no traceback); the others run `sslx.main` in this
process, which is what a process runs, without its seconds of start-up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import pytest
from helpers import REPO, exit_message, logged_steps, run_main, small_fmnist_npz, tiny_config

from sslx import saved_config, train
from sslx.data import views
from sslx.errors import CheckpointError, ConfigError, DataError

# The demo's recipe on a 2-block ViT-T/4, whose train step compiles in a few seconds
# where the demo's ResNet-18 takes tens of seconds on a cold cache.
SMALL_MODEL = ("--config.model.name=vit_t", "--config.model.patch_size=4",
               "--config.model.depth=2")


def _cli_env() -> dict[str, str]:
    """The environment of a new `sslx.main` process: one CPU device, the suite's
    compile cache."""
    return {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m sslx.main ARGS` in a new process, sharing the suite's compile cache."""
    return subprocess.run([sys.executable, "-m", "sslx.main", *args], cwd=REPO, env=_cli_env(),
                          capture_output=True, text=True, timeout=600)


def _terminated_after(args: list[str], workdir: str, step: int) -> tuple[str, float]:
    """Starts `python -m sslx.main ARGS`, sends it SIGTERM once it has logged `step`,
    and checks it exits 0. Returns its stderr and the seconds from SIGTERM to exit."""
    process = subprocess.Popen([sys.executable, "-m", "sslx.main", *args], cwd=REPO,
                               env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 300
        while not (os.path.exists(os.path.join(workdir, "metrics.jsonl"))
                   and step in logged_steps(workdir)):
            assert process.poll() is None, process.communicate()[1][-3000:]
            if time.monotonic() > deadline:  # a hung process, not a speed check
                pytest.fail("the run logged no step in 300 s")
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        _, stderr = process.communicate(timeout=120)
        return stderr, time.monotonic() - start
    finally:
        process.kill()


def test_sigterm_saves_the_step_exits_0_and_the_same_command_resumes(tmp_path):
    npz = small_fmnist_npz(str(tmp_path / "small.npz"))
    workdir = str(tmp_path / "run")
    args = ["--config=configs/simclr_fmnist.py", f"--workdir={workdir}",
            "--config.data.source=arrays", f"--config.data.path={npz}",
            "--config.train.steps=100000", "--config.train.batch_size=16", *SMALL_MODEL,
            "--config.train.log_every=1",
            "--config.checkpoint.every_steps=100000", "--config.optim.warmup_epochs=0"]
    stderr, seconds = _terminated_after(args, workdir, step=1)
    stopped = re.search(r"preempted: the checkpoint of step (\d+) is saved", stderr)
    assert stopped, stderr[-3000:]
    saved = int(stopped.group(1))
    assert str(saved) in os.listdir(os.path.join(workdir, "checkpoints"))
    assert "Traceback" not in stderr and logged_steps(workdir)[-1] == saved
    print(f"SIGTERM to exit: {seconds:.1f} s")

    _terminated_after(args, workdir, step=saved + 1)  # the same command continues
    assert logged_steps(workdir)[:saved + 1] == list(range(1, saved + 2))


def test_cli_trains_and_prints_knn(tmp_path):
    npz = small_fmnist_npz(str(tmp_path / "small.npz"))
    workdir = str(tmp_path / "run")
    result = _cli("--config=configs/simclr_fmnist.py", f"--workdir={workdir}",
                  "--config.data.source=arrays", f"--config.data.path={npz}",
                  "--config.train.steps=2", "--config.train.batch_size=32", *SMALL_MODEL,
                  "--config.evals.knn.ks=(5,)",
                  "--config.optim.warmup_epochs=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "k-NN top-1: " in result.stdout
    index = os.path.join(workdir, "embeddings", "test", "index.json")
    assert f"embeddings index: {index}" in result.stdout and os.path.exists(index)


def test_unknown_config_key_names_close_matches(tmp_path):
    message = exit_message("--config=configs/simclr_fmnist.py", f"--workdir={tmp_path}",
                           "--config.model.widht=8")
    assert message.startswith("sslx: ") and "widht" in message and "width" in message


@pytest.mark.parametrize("overrides, field", [
    ({"optim.base_lr": -0.1}, "config.optim.base_lr"),
    ({"train.batch_size": 12}, "config.train.batch_size"),
    ({"views.global_crops.size": 32}, "config.views.global_crops.size"),
    ({"train.dtype": "float16"}, "config.train.dtype"),
    ({"method.temperature": 0.0}, "config.method.temperature"),
])
def test_bad_config_value_fails_before_compiling(overrides, field, tmp_path):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        train.prepare(tiny_config(**overrides), str(tmp_path))


def test_missing_data_dir_is_named(tmp_path):
    missing = str(tmp_path / "no_such_dir")
    with pytest.raises(DataError, match="no_such_dir"):
        train.prepare(tiny_config(**{"data.path": missing}), str(tmp_path / "run"))


def test_checkpoint_of_another_model_is_refused(tmp_path):
    npz = small_fmnist_npz(str(tmp_path / "small.npz"))
    workdir = str(tmp_path / "run")
    quiet = {"evals.knn.enabled": False, "eval.export_at_end": False}
    train.train_and_evaluate(tiny_config(npz=npz, **quiet), workdir)
    wider = tiny_config(npz=npz, **{**quiet, "model.width": 16})
    with pytest.raises(CheckpointError, match=r"config\.model\.width=8"):
        train.train_and_evaluate(wider, workdir)
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))


def _printed_config(capsys, *args: str):
    capsys.readouterr()
    run_main("--mode=print_config", *args)
    return saved_config.from_dict(json.loads(capsys.readouterr().out))


def test_per_crop_tuples_on_the_command_line_reach_the_pipeline(capsys):
    config = _printed_config(capsys, "--config=configs/simclr_fmnist.py",
                             "--config.views.global_crops.blur_prob=(1.0,0.1)",
                             "--config.views.global_crops.solarize_prob=0.2")
    specs = views.view_specs(config.views)
    assert [spec.blur_prob for spec in specs] == [1.0, 0.1]
    assert [spec.solarize_prob for spec in specs] == [0.2, 0.2]


def test_workdir_without_config_uses_its_saved_config(tmp_path, capsys):
    config = tiny_config()
    saved_config.save(config, str(tmp_path))
    printed = _printed_config(capsys, f"--workdir={tmp_path}", "--config.evals.knn.ks=(3,)")
    assert printed.evals.knn.ks == (3,)
    printed.evals.knn.ks = config.evals.knn.ks
    assert printed.to_dict() == config.to_dict()


def test_error_during_a_run_is_one_line_on_stderr(tmp_path):
    result = _cli("--config=configs/simclr_fmnist.py", f"--workdir={tmp_path}",
                  "--config.data.eval_split=nope")
    assert result.returncode != 0
    assert result.stderr.startswith("sslx: ") and "no split 'nope'" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (("--config.optim.base_lr=abc",), "could not convert string to float: 'abc'\n"),
    (("--config.train.dtype=float16", "--config.data.eval_split=nope"),
     "config.train.dtype='float16' is not one of float32, bfloat16"),
])
def test_errors_name_the_fix(args, message, tmp_path):
    got = exit_message("--config=configs/simclr_fmnist.py", f"--workdir={tmp_path}", *args)
    assert got.startswith("sslx: ") and message in got, got


@pytest.mark.parametrize("args, message", [
    ((), "--config=configs/RECIPE.py is required"),
    (("--config=configs/simclr_fmnist.py",), "--workdir is required"),
    (("--config=configs/simclr_fmnist.py:nope", "--workdir=x"),
     "unknown config variant 'nope'; available: runlocal"),
])
def test_missing_or_unknown_arguments_are_named(args, message):
    got = exit_message(*args)
    assert got.startswith("sslx: ") and message in got, got
