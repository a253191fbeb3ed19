"""Device mesh, shardings and multi-host input assembly.

The mesh comes from `config.mesh`, (axis name, size) pairs over the axes `data`
and `fsdp` (-1: the devices the other axes leave). The batch is split over all
axes together; parameters and optimizer state are replicated, or with
`config.train.param_sharding=fsdp` placed by `state_shardings`: a leaf whose
path matches one of `config.train.fsdp_rules`, or of at least
`config.train.fsdp_min_size` elements, has its largest divisible axis split over
`fsdp` (over `data` on a mesh without an `fsdp` axis, the 1-D default). The train
step is written for the global batch, so XLA inserts the collectives (all-gather
of a split weight before its use, reduce-scatter of its gradient); nothing here
is method-specific. With Auto axes the partitioner may instead follow a split
weight and gather activations; traced under `jax.set_mesh(mesh)` the ViT pins
its blocks to the batch split (`sslx.models.vit.batch_sharded`).

The mesh axes are `AxisType.Auto` (compiler-propagated shardings). Explicit
sharding-in-types would force every method to annotate reshapes and
contractions of batch-sharded arrays; Auto gives the same global semantics with
the shardings pinned at the jit boundary (inputs, state and outputs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from sslx import config_checks
from sslx.checkpoint import path_names

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
DEFAULT_MESH = ((DATA_AXIS, -1),)  # config.mesh: every device on `data`
# Leaves smaller than this stay replicated under FSDP (config.train.fsdp_min_size):
# splitting them costs more in collectives than it saves in memory.
FSDP_MIN_SIZE = 2**16


def make_mesh(devices: Sequence[jax.Device] | None = None,
              axes: Sequence[Sequence[Any]] = DEFAULT_MESH) -> Mesh:
    """The mesh of `axes` (`config.mesh`: (name, size) pairs, -1 = the remaining
    devices) over `devices` (all devices of all hosts by default). A `ConfigError`
    naming `config.mesh` where the sizes do not fit the devices."""
    devices = list(devices) if devices is not None else jax.devices()
    names, sizes = config_checks.mesh_shape(axes, len(devices))
    return jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(names),
                         devices=devices)


def batch_axes(mesh: Mesh) -> str | tuple[str, ...]:
    """The mesh axes the batch is split over: all of them, so FSDP's devices also
    take their share of the batch (a lone axis by its name, as a 1-D mesh always had)."""
    names = tuple(mesh.axis_names)
    return names[0] if len(names) == 1 else names


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over all mesh axes (`batch_axes`)."""
    return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def fsdp_axis(mesh: Mesh) -> str:
    """The axis FSDP splits parameters over: `fsdp`, or `data` on a mesh without
    one (so a 1-D run with param_sharding=fsdp keeps its placement and checkpoints)."""
    return FSDP_AXIS if FSDP_AXIS in mesh.axis_names else DATA_AXIS


def state_shardings(abstract_state: Any, mesh: Mesh, strategy: str, *,
                    min_size: int = FSDP_MIN_SIZE, rules: Sequence[str] = ()) -> Any:
    """Shardings for a pytree of `jax.ShapeDtypeStruct`: replicated, or FSDP.

    Under FSDP a leaf is split when its path ('/'-joined key names, as
    `sslx.checkpoint.path_names` gives them: `params/backbone/block0/fc1/kernel`,
    `opt_state/0/mu/backbone/...`) matches one of the regexes `rules`
    (`re.search`), or else when it has at least `min_size` elements; its largest
    axis divisible by the FSDP axis' size is split (`fsdp_axis`), and a leaf with
    none stays replicated. Searched rather than matched, so one rule places a
    parameter and its optimizer moments alike."""
    if strategy == "replicated":
        return jax.tree.map(lambda _: replicated(mesh), abstract_state)
    axis = fsdp_axis(mesh)
    patterns = [re.compile(rule) for rule in rules]

    def place(keypath: Any, leaf: jax.ShapeDtypeStruct) -> NamedSharding:
        shape = tuple(getattr(leaf, "shape", ()))
        path = "/".join(path_names(keypath))
        wanted = any(p.search(path) for p in patterns) or (
            bool(shape) and np.prod(shape) >= min_size)
        return split_largest_axis(shape, mesh, axis) if wanted and shape else replicated(mesh)

    return jax.tree_util.tree_map_with_path(place, abstract_state)


def placement_options(train: Any) -> dict[str, Any]:
    """`state_shardings`' FSDP options from `config.train` (their defaults for a
    config saved before the fields existed)."""
    return {"min_size": train.get("fsdp_min_size", FSDP_MIN_SIZE),
            "rules": tuple(train.get("fsdp_rules", ()))}


def split_largest_axis(shape: tuple[int, ...], mesh: Mesh, axis: str) -> NamedSharding:
    """`shape`'s largest axis divisible by the size of mesh axis `axis` split over
    it (the largest, so each device's slice is the most even); replicated if none."""
    size = mesh.shape[axis]
    for dim in np.argsort(shape)[::-1]:
        if shape[dim] % size == 0:
            spec = [None] * len(shape)
            spec[dim] = axis
            return NamedSharding(mesh, PartitionSpec(*spec))
    return replicated(mesh)


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Assembles each host's numpy batch into global arrays split over the batch axes."""
    sharding = data_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
