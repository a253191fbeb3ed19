"""When a run joins a multi-process cluster: environment variables (SLURM, Open MPI,
GKE TPUs, an explicit coordinator), a Cloud TPU VM's metadata, and the GPUs each
SLURM task drives. No network: the metadata reader is replaced in every test."""

from __future__ import annotations

import jax
import pytest

from sslx import distributed
from sslx.errors import ConfigError

_ALL_ENV = (*distributed._CLUSTER_ENV, *distributed._TPU_ENV, "TPU_SKIP_MDS_QUERY",
            "SLURM_JOB_ID", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
            "CUDA_VISIBLE_DEVICES", "JAX_LOCAL_DEVICE_IDS")


@pytest.fixture
def calls(monkeypatch):
    """A clean environment off any TPU VM, no metadata server, and the keyword
    arguments of each `jax.distributed.initialize` call recorded instead of made."""
    for name in _ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed, "_looks_like_tpu_vm", lambda: False)
    monkeypatch.setattr(distributed, "_read_metadata", _no_metadata)
    recorded = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: recorded.append(k))
    return recorded


def _no_metadata(key: str) -> str | None:
    raise AssertionError(f"metadata[{key!r}] read off a TPU VM")


@pytest.mark.parametrize("env, expected", [
    ({}, False),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"SLURM_NTASKS": "1"}, False),
    ({"SLURM_NTASKS": "4"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t1k-0"}, False),
    ({"TPU_WORKER_HOSTNAMES": "t1k-0,t1k-1"}, True),
    ({"TPU_PROCESS_ADDRESSES": "10.0.0.2:8476,10.0.0.3:8476"}, True),
    ({"MEGASCALE_NUM_SLICES": "2"}, True),
])
def test_env_detection_and_modes(env, expected, calls, monkeypatch):
    """`auto` joins only when the environment names more than one process; `off`
    never does, `on` always."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed._in_multiprocess_cluster() is expected
    assert distributed.maybe_initialize_distributed("auto") is expected
    assert len(calls) == int(expected)
    assert distributed.maybe_initialize_distributed("off") is False
    assert len(calls) == int(expected)
    assert distributed.maybe_initialize_distributed("on") is True
    assert len(calls) == int(expected) + 1


def test_unknown_mode_is_a_config_error(calls):
    with pytest.raises(ConfigError, match="--distributed='yes' must be one of auto, on, off"):
        distributed.maybe_initialize_distributed("yes")
    assert not calls


def _on_tpu_vm(monkeypatch, metadata: dict[str, str]) -> list[str]:
    """Pretends to be a TPU VM whose metadata server holds `metadata`; returns the
    keys read."""
    read = []

    def fake(key: str) -> str | None:
        read.append(key)
        return metadata.get(key)

    monkeypatch.setattr(distributed, "_looks_like_tpu_vm", lambda: True)
    monkeypatch.setattr(distributed, "_read_metadata", fake)
    return read


@pytest.mark.parametrize("metadata, expected", [
    ({}, False),  # a TPU VM without a metadata answer: one process
    ({"worker-network-endpoints": "10.0.0.5", "accelerator-type": "v4-8"}, False),
    ({"worker-network-endpoints": "w-0:0:10.0.0.5,w-1:1:10.0.0.6"}, True),  # old format
    ({"worker-network-endpoints": "t1v-n-0,t1v-n-1,t1v-n-2,t1v-n-3"}, True),
    ({"accelerator-type": "v4-32"}, True),  # no endpoints listed: the type implies 4
    ({"accelerator-type": "v5litepod-8"}, False),
    ({"accelerator-type": "v5litepod-16"}, True),
])
def test_tpu_pod_slice_from_metadata(metadata, expected, calls, monkeypatch):
    """A TPU VM made by `gcloud compute tpus tpu-vm create` sets no cluster variable:
    the metadata server's worker list or accelerator type says it is a pod slice."""
    read = _on_tpu_vm(monkeypatch, metadata)
    assert distributed.maybe_initialize_distributed("auto") is expected
    assert calls == ([{}] if expected else [])
    assert "worker-network-endpoints" in read


def test_metadata_is_not_read_when_env_decides_or_off_tpu(calls, monkeypatch):
    """Cluster variables answer without a query; off a TPU VM nothing is queried
    (the fixture's reader fails the test if called)."""
    assert distributed.maybe_initialize_distributed("auto") is False
    read = _on_tpu_vm(monkeypatch, {"worker-network-endpoints": "a,b"})
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert distributed.maybe_initialize_distributed("auto") is True
    assert read == []


def test_tpu_accelerator_type_from_env(calls, monkeypatch):
    """GKE sets TPU_ACCELERATOR_TYPE: it stands in for the metadata attribute."""
    read = _on_tpu_vm(monkeypatch, {})
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5p-64")
    assert distributed.maybe_initialize_distributed("auto") is True
    assert "accelerator-type" not in read


def test_looks_like_tpu_vm_signs(monkeypatch):
    """TPU_NAME counts as a sign of a TPU VM; TPU_SKIP_MDS_QUERY (as in jax) wins."""
    for name in _ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TPU_NAME", "my-slice")
    assert distributed._looks_like_tpu_vm() is True
    monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")
    assert distributed._looks_like_tpu_vm() is False


def test_metadata_reader_gives_none_without_a_server(monkeypatch):
    """An unreachable metadata server is 'no answer', not an error."""
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")  # discard port: refused at once
    assert distributed._read_metadata("worker-network-endpoints") is None


@pytest.mark.parametrize("accelerator_type, hosts", [
    ("v2-8", 1), ("v3-32", 4), ("v4-8", 1), ("v4-32", 4), ("v5p-128", 16),
    ("v5litepod-1", 1), ("v5litepod-8", 1), ("v5litepod-16", 4), ("v6e-8", 1),
    ("v6e-64", 16), ("V4-16", 2), ("", 1), ("gpu-8", 1), ("v4", 1),
])
def test_hosts_for_accelerator_type(accelerator_type, hosts):
    assert distributed.hosts_for_accelerator_type(accelerator_type) == hosts


@pytest.mark.parametrize("env, local_device_ids", [
    # One task per GPU, each seeing all the node's GPUs: jax's default (task i, GPU i).
    ({"SLURM_NTASKS_PER_NODE": "8", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, None),
    # --gpus-per-task=1: each task sees only its GPU, as device 0.
    ({"SLURM_NTASKS_PER_NODE": "8", "CUDA_VISIBLE_DEVICES": "5"}, [0]),
    # One task per node: it drives every GPU it sees, not just the first.
    ({"SLURM_NTASKS_PER_NODE": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, [0, 1, 2, 3]),
    ({"SLURM_TASKS_PER_NODE": "1(x4)", "CUDA_VISIBLE_DEVICES": "0,1"}, [0, 1]),
    # Nothing visible to go by, or an explicit choice: jax decides.
    ({"SLURM_NTASKS_PER_NODE": "1"}, None),
    ({"SLURM_NTASKS_PER_NODE": "1", "CUDA_VISIBLE_DEVICES": "0,1",
      "JAX_LOCAL_DEVICE_IDS": "0"}, None),
])
def test_slurm_local_device_ids(env, local_device_ids, calls, monkeypatch):
    """Every GPU of every node ends up in the mesh, whichever way srun bound them."""
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.maybe_initialize_distributed("auto") is True
    expected = {} if local_device_ids is None else {"local_device_ids": local_device_ids}
    assert calls == [expected]


def test_no_slurm_job_leaves_local_devices_to_jax(calls, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert distributed.maybe_initialize_distributed("auto") is True
    assert calls == [{}]
