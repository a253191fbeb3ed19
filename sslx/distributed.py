"""Whether this run is one process of several, and if so `jax.distributed.initialize()`.

A multi-process run must join the other processes before jax first touches a
device, or every process trains alone on its own devices. The environment says
whether there are others: SLURM, Open MPI, GKE's TPU variables, an explicit
coordinator address, or, on a Cloud TPU VM started by `gcloud ... tpu-vm create`
(which sets no such variable), the VM's metadata server. jax then discovers the
coordinator, process count and process id by itself.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import urllib.request

import jax

from sslx.errors import ConfigError

logger = logging.getLogger(__name__)

MODES = ("auto", "on", "off")

# Each names a cluster of more than one process when it holds a number > 1, a
# comma-separated list (hostnames), or, for the coordinator address, anything.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "MEGASCALE_NUM_SLICES")
# Set on TPU VMs (GKE and some images); either says a metadata query is worth its second.
_TPU_ENV = ("TPU_NAME", "TPU_ACCELERATOR_TYPE")
_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up on the PCI bus with Google's vendor id
_METADATA_URL = "http://{host}/computeMetadata/v1/instance/attributes/{key}"
_METADATA_TIMEOUT_S = 1.0


def maybe_initialize_distributed(mode: str = "auto") -> bool:
    """Calls `jax.distributed.initialize()` when this process is one of several.

    mode: `on` always, `off` never, `auto` when the environment or the TPU VM's
    metadata names a cluster of more than one process. Returns whether it
    initialised, so the caller can log it."""
    if mode not in MODES:
        raise ConfigError(f"--distributed={mode!r} must be one of {', '.join(MODES)}")
    if mode == "off" or (mode == "auto" and not _in_multiprocess_cluster()):
        return False
    local_device_ids = _slurm_local_device_ids()
    if local_device_ids is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(local_device_ids=local_device_ids)
    return True


def _in_multiprocess_cluster() -> bool:
    """True when the environment variables, or else a TPU pod slice's metadata, name
    more than one process."""
    return _env_names_cluster() or _tpu_slice_worker_count() > 1


def _env_names_cluster() -> bool:
    """True when one of `_CLUSTER_ENV` names more than one process."""
    for name in _CLUSTER_ENV:
        value = os.environ.get(name, "").strip()
        if name == "JAX_COORDINATOR_ADDRESS" and value:
            return True
        if "," in value.strip(","):
            return True
        if value.isdigit() and int(value) > 1:
            return True
    return False


def _looks_like_tpu_vm() -> bool:
    """Cheap local signs of a Cloud TPU VM, checked before any network query so that
    other machines never wait on a metadata server they do not have.

    Mirrors jax's own test (TPU chips on the PCI bus with Google's vendor id) and
    adds the device nodes (/dev/accel* up to v4, /dev/vfio/N from v5e on) and the
    variables some TPU images set. `TPU_SKIP_MDS_QUERY`, which jax honours too,
    turns the query off."""
    if os.environ.get("TPU_SKIP_MDS_QUERY"):
        return False
    if any(os.environ.get(name) for name in _TPU_ENV):
        return True
    if os.path.exists("/dev/accel0"):
        return True
    vfio_groups = [p for p in glob.glob("/dev/vfio/*") if os.path.basename(p).isdigit()]
    return bool(vfio_groups) and _has_google_pci_device()


def _has_google_pci_device() -> bool:
    """True when a PCI device of Google's vendor id (a TPU chip) is attached."""
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == _GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def _read_metadata(key: str) -> str | None:
    """The TPU VM's instance attribute `key` from the metadata server, or None when
    there is no server, no such attribute, or no answer within a second."""
    host = os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
    request = urllib.request.Request(_METADATA_URL.format(host=host, key=key),
                                     headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=_METADATA_TIMEOUT_S) as response:
            if response.status != 200:
                return None
            return response.read().decode().strip()
    except (OSError, ValueError):  # URLError, timeouts and refused connections are OSErrors
        return None


def _tpu_slice_worker_count() -> int:
    """Workers (hosts, one process each) of the TPU slice this VM belongs to; 1 off a
    TPU VM or when the metadata server says nothing.

    `worker-network-endpoints` lists one address per worker (old format
    `name:id:ip`, new format a hostname); `accelerator-type` such as `v4-32` or
    `v5litepod-16` implies the count too, for images that list no endpoints."""
    if not _looks_like_tpu_vm():
        return 1
    endpoints = _read_metadata("worker-network-endpoints") or ""
    listed = len([e for e in endpoints.split(",") if e.strip()])
    accelerator = os.environ.get("TPU_ACCELERATOR_TYPE") or _read_metadata("accelerator-type")
    implied = hosts_for_accelerator_type(accelerator or "")
    count = max(listed, implied)
    if count > 1:
        logger.info("TPU pod slice of %d workers (%s)", count, accelerator or endpoints)
    return max(count, 1)


def hosts_for_accelerator_type(accelerator_type: str) -> int:
    """Hosts of a Cloud TPU slice named like `v4-32`, `v5p-128`, `v5litepod-16`,
    `v6e-64`; 1 for single-host or unknown names.

    v2, v3, v4 and v5p count TensorCores, 8 to a host. v5e (`v5litepod`, `v5e`)
    and v6e count chips: up to 8 on one host, 4 to a host in larger slices."""
    match = re.fullmatch(r"(v\d+[a-z]*|tpu\d+[a-z]*)-(\d+)", accelerator_type.strip().lower())
    if not match:
        return 1
    family, size = match.group(1), int(match.group(2))
    if family in ("v2", "v3", "v4", "v5p"):
        return max(1, size // 8)
    if family in ("v5litepod", "v5e", "v6e"):
        return 1 if size <= 8 else size // 4
    return 1


def _slurm_local_device_ids() -> list[int] | None:
    """The GPUs this SLURM task drives, where jax's default would pick the wrong ones.

    jax's SLURM detection has task i of a node drive GPU i, which assumes every task
    sees all the node's GPUs (`--ntasks-per-node=G --gpus-per-node=G`). A task bound
    to one GPU (`--gpus-per-task=1`) sees it as device 0, and a single task per node
    would use one GPU of several. None leaves jax's default."""
    if "SLURM_JOB_ID" not in os.environ or "JAX_LOCAL_DEVICE_IDS" in os.environ:
        return None
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not visible:
        return None
    if len(visible) == 1:
        return [0]
    if _slurm_tasks_per_node() == 1:
        return list(range(len(visible)))
    return None


def _slurm_tasks_per_node() -> int | None:
    """Tasks on this node: SLURM_NTASKS_PER_NODE, else the first count of
    SLURM_TASKS_PER_NODE (`8(x4)` or `8,4`)."""
    value = os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE", "")
    match = re.match(r"\d+", value)
    return int(match.group()) if match else None
