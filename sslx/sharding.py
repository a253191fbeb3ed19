"""Device mesh, shardings and multi-host input assembly.

One mesh axis, `data`: the batch is split over it and parameters are
replicated (or, with `param_sharding=fsdp`, their largest divisible axis is split
over it too). The train step is written for the global batch, so XLA inserts
the collectives; nothing here is method-specific.

The mesh axis is `AxisType.Auto` (compiler-propagated shardings). Explicit
sharding-in-types would force every method to annotate reshapes and
contractions of batch-sharded arrays; Auto gives the same global semantics with
the shardings pinned at the jit boundary (inputs, state and outputs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
# Leaves smaller than this stay replicated under FSDP: splitting them costs
# more in collectives than it saves in memory.
_FSDP_MIN_SIZE = 2**16

_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed(mode: str = "auto") -> None:
    """`jax.distributed.initialize()` for multi-process runs.

    mode: `on` always, `off` never, `auto` when the environment names a cluster
    of more than one process (Cloud TPU pod, SLURM, Open MPI, or an explicit
    coordinator address); jax then discovers the rest itself."""
    if mode == "off":
        return
    if mode == "auto" and not _in_multiprocess_cluster():
        return
    jax.distributed.initialize()


def _in_multiprocess_cluster() -> bool:
    for name in _CLUSTER_ENV:
        value = os.environ.get(name, "")
        if name == "JAX_COORDINATOR_ADDRESS" and value:
            return True
        if name == "TPU_WORKER_HOSTNAMES" and "," in value:
            return True
        if value.isdigit() and int(value) > 1:
            return True
    return False


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D `data` mesh over `devices` (all devices of all hosts by default)."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(abstract_state: Any, mesh: Mesh, strategy: str) -> Any:
    """Shardings for a pytree of `jax.ShapeDtypeStruct`: replicated, or FSDP."""
    if strategy == "replicated":
        return jax.tree.map(lambda _: replicated(mesh), abstract_state)
    num_devices = mesh.shape[DATA_AXIS]

    def fsdp(leaf: jax.ShapeDtypeStruct) -> NamedSharding:
        shape = getattr(leaf, "shape", ())
        if not shape or np.prod(shape) < _FSDP_MIN_SIZE:
            return replicated(mesh)
        for axis in np.argsort(shape)[::-1]:
            if shape[axis] % num_devices == 0:
                spec = [None] * len(shape)
                spec[axis] = DATA_AXIS
                return NamedSharding(mesh, PartitionSpec(*spec))
        return replicated(mesh)

    return jax.tree.map(fsdp, abstract_state)


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Assembles each host's numpy batch into global arrays split over `data`."""
    sharding = data_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
