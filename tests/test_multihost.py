"""Multi-host training on one machine: two `jax.distributed` processes on loopback (2 CPU
devices each, gloo collectives) train through `sslx.train.train_and_evaluate` in one
workdir, and must match one process of 4 CPU devices trained on the same global
batches with the same seed: the same logged metrics and the same final parameters.

What only a multi-host run can get wrong is checked too: each host reads its own
shard of the training data (`sources._shard_bounds`), only process 0 writes the
metrics, the config and the embeddings index while each host writes its own shard
of the embeddings, the checkpoint holds both hosts' shards of FSDP-split weights,
and a run resumes from a single-process run's step-2 checkpoint, restored onto
the other device layout.

Each process is a `tests/multihost_worker.py` of its own, since this one is fixed at
8 devices and one jax process (tests/conftest.py); they share the suite's compile
cache. The reference runs beside the first two-host run, then the resumed run, so
the check waits for two rounds of process start-ups."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from helpers import REPO, SMALL_BACKBONE, logged_steps, small_fmnist_npz

from sslx.data import sources

WORKER = os.path.join(REPO, "tests", "multihost_worker.py")
RECIPE = "configs/simclr_resnet50.py"
HOSTS = 2
DEVICES_PER_HOST = 2
TRAIN_SIZE = 64  # 32 per host: 3 steps of 8 examples per host stay in the first epoch
STEPS = 3
BATCH = 16  # helpers.tiny_overrides' global batch
TIMEOUT_S = 300  # per group of processes started together
# Metrics that measure the machine, not the training.
TIMINGS = ("images_per_sec", "step_time", "input_wait")


def _indexed_npz(path: str) -> str:
    """Fashion-MNIST images whose train labels are the example indices 0..N-1, so a
    batch's labels say which examples it holds (the method reads no labels)."""
    small_fmnist_npz(path, train_size=TRAIN_SIZE, test_size=32)
    arrays = dict(np.load(path))
    arrays["train_labels"] = np.arange(TRAIN_SIZE, dtype=np.int32)
    np.savez(path, **arrays)
    return path


def _overrides(npz: str) -> dict:
    """A ViT-T/4 SimCLR of 3 steps with FSDP over all 4 devices (so both hosts hold
    shards of the weights), exporting the test split's embeddings at the end; no
    k-NN, whose memory bank would take the index labels for classes."""
    return {**SMALL_BACKBONE, "data.source": "arrays", "data.path": npz,
            "train.steps": STEPS, "train.param_sharding": "fsdp",
            "train.fsdp_min_size": 1024, "evals.knn.enabled": False}


def _env(devices: int) -> dict[str, str]:
    """A worker's environment: `devices` CPU devices, the suite's compile cache."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices),
            "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, name: str, workdir: str, npz: str, hosts: int | None) -> list:
    """Starts the worker processes of one run: `hosts` processes of a distributed run,
    or (None) the single-process reference on all 4 devices. Returns
    `[(process, log path)]`; their reports go to tmp_path/name."""
    out = tmp_path / name
    out.mkdir()
    spec = {"recipe": RECIPE, "overrides": _overrides(npz), "workdir": workdir,
            "out": str(out)}
    port = _free_port()
    started = []
    for process_id in range(hosts or 1):
        if hosts:
            spec = {**spec, "process_id": process_id, "num_processes": hosts, "port": port}
        spec_path = out / f"spec_{process_id}.json"
        spec_path.write_text(json.dumps(spec))
        log_path = out / f"log_{process_id}.txt"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, WORKER, str(spec_path)], cwd=REPO, stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(DEVICES_PER_HOST if hosts else HOSTS * DEVICES_PER_HOST))
        started.append((process, log_path))
    return started


def _wait(started: list) -> None:
    """Waits for every process, within TIMEOUT_S in all; a failure shows its log, a
    hang the stacks of every process still running."""
    deadline = time.monotonic() + TIMEOUT_S
    for process, log_path in started:
        try:
            process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            running = [(p, log) for p, log in started if p.poll() is None]
            for p, _ in running:
                p.send_signal(signal.SIGUSR1)  # the worker prints its stacks
            time.sleep(2)
            raise AssertionError(f"still running after {TIMEOUT_S} s:\n" + "\n".join(
                f"== {log}\n{_tail(log)}" for _, log in running)) from None
        assert process.returncode == 0, f"{log_path} exited {process.returncode}:\n" \
                                        f"{_tail(log_path)}"


def _tail(log_path) -> str:
    with open(log_path) as f:
        return f.read()[-4000:]


def _kill(started: list) -> None:
    for process, _ in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _run_together(*runs: list) -> None:
    """Waits for runs started together; kills whatever is left when one fails."""
    started = [process for run in runs for process in run]
    try:
        _wait(started)
    finally:
        _kill(started)


def _reports(tmp_path, name: str, count: int) -> list[dict]:
    reports = []
    for index in range(count):
        with open(tmp_path / name / f"process_{index}.json") as f:
            reports.append(json.load(f))
    return reports


def _params(tmp_path, name: str):
    with open(tmp_path / name / "params.pkl", "rb") as f:
        return pickle.load(f)


def _logged(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _assert_same_params(got, want, what: str) -> None:
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(want)]
    assert jax.tree.structure(got) == jax.tree.structure(want), what
    for path, g, w in zip(paths, jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"{what}{path}")


def test_two_hosts_train_as_one_process_on_their_own_shards_and_resume(tmp_path):
    npz = _indexed_npz(str(tmp_path / "indexed.npz"))
    reference, two = str(tmp_path / "reference"), str(tmp_path / "two_hosts")
    _run_together(_start(tmp_path, "reference_out", reference, npz, hosts=None),
                  _start(tmp_path, "two_out", two, npz, hosts=HOSTS))
    (one,) = _reports(tmp_path, "reference_out", 1)
    hosts = _reports(tmp_path, "two_out", HOSTS)
    assert [(r["process_count"], r["local_devices"], r["devices"]) for r in hosts] == (
        [(HOSTS, DEVICES_PER_HOST, HOSTS * DEVICES_PER_HOST)] * HOSTS)
    assert (one["process_count"], one["devices"]) == (1, HOSTS * DEVICES_PER_HOST)

    # Each host's first batch: its share of the global batch, from its own shard only.
    for index, report in enumerate(hosts):
        start, stop = sources._shard_bounds(TRAIN_SIZE, index, HOSTS)
        labels = report["first_labels"]
        assert len(labels) == len(set(labels)) == BATCH // HOSTS, labels
        assert all(start <= label < stop for label in labels), (index, labels, start, stop)
    assert not set(hosts[0]["first_labels"]) & set(hosts[1]["first_labels"])
    # The reference trained on the very batch the hosts assembled, host 0's rows first.
    assert one["first_labels"] == hosts[0]["first_labels"] + hosts[1]["first_labels"]

    # The same training: logged metrics (one line per step, from process 0 only) and
    # final parameters, gathered from both hosts.
    logged, want = _logged(two), _logged(reference)
    assert [line["step"] for line in logged] == list(range(1, STEPS + 1))
    for got_line, want_line in zip(logged, want, strict=True):
        for name in set(want_line) - {"step", *TIMINGS}:
            np.testing.assert_allclose(got_line[name], want_line[name], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name} of step {want_line['step']}")
    reference_params = _params(tmp_path, "reference_out")
    _assert_same_params(_params(tmp_path, "two_out"), reference_params, "two hosts' params")

    # Process 0 writes the run's files; each host writes its own embedding shard.
    assert [r["step"] for r in hosts] == [STEPS] * HOSTS
    index_path = os.path.join(two, "embeddings", "test", "index.json")
    assert hosts[0]["embeddings"] == {"index": index_path} and hosts[1]["embeddings"] == {}
    with open(index_path) as f:
        index = json.load(f)
    assert (index["complete"], index["process_count"], index["step"]) == (True, HOSTS, STEPS)
    written = [set(r["written"]) for r in hosts]
    shared = {"metrics.jsonl", "config.json", os.path.join("embeddings", "test", "index.json")}
    assert shared <= written[0] and not shared & written[1], written
    for host, files in enumerate(written):
        assert any(f.startswith(os.path.join("embeddings", "test", f"features-{host}-"))
                   for f in files), (host, files)
    # One checkpoint per step, holding FSDP shards written by each host.
    checkpoints = os.path.join(two, "checkpoints")
    assert sorted(os.listdir(checkpoints)) == [str(s) for s in range(1, STEPS + 1)]
    assert {f"ocdbt.process_{h}" for h in range(HOSTS)} <= set(
        os.listdir(os.path.join(checkpoints, str(STEPS), "state")))

    # A two-host run given the reference's step-2 checkpoint resumes from it on the
    # other device layout and ends where the reference did.
    resumed = str(tmp_path / "resumed")
    shutil.copytree(os.path.join(reference, "checkpoints"), os.path.join(resumed, "checkpoints"))
    shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))
    _run_together(_start(tmp_path, "resumed_out", resumed, npz, hosts=HOSTS))
    assert [r["step"] for r in _reports(tmp_path, "resumed_out", HOSTS)] == [STEPS] * HOSTS
    assert logged_steps(resumed) == [STEPS]
    _assert_same_params(_params(tmp_path, "resumed_out"), reference_params, "resumed params")
