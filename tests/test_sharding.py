"""The mesh from config, parameter sharding (FSDP) and bfloat16 compute."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import jax
import numpy as np
import pytest
from absl import flags
from helpers import (
    REPO,
    SMALL_BACKBONE,
    assert_sharded_step_matches,
    end_to_end_config,
    synthetic_batch,
    tiny_config,
)
from jax.sharding import PartitionSpec
from ml_collections import config_flags

from sslx import config_checks, saved_config, sharding, train
from sslx.checkpoint import path_names
from sslx.errors import ConfigError

SIMCLR = "configs/simclr_resnet50.py"
DATA_FSDP = (("data", 4), ("fsdp", 2))
ALL_FSDP = (("data", 1), ("fsdp", 8))


def _losses(workdir: str) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def test_fsdp_equals_one_device_and_trains_end_to_end(npz, tmp_path):
    """With FSDP on the default 1-D mesh the tiny model's larger kernels are split over
    the 8 `data` devices (the size threshold is lowered so that any is); the sharded
    step still equals one device's, and a run trains, checkpoints and embeds for k-NN
    with the split parameters."""
    config = end_to_end_config(SIMCLR, npz, **{"train.param_sharding": "fsdp",
                                               "train.fsdp_min_size": 2**10})
    run = train.prepare(config, str(tmp_path / "shapes"))
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(run.abstract_state.params)]
    assert sum(sharding.DATA_AXIS in spec for spec in specs) >= 10
    assert_sharded_step_matches(config, tmp_path)

    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    assert results["step"] == 3 and 0 <= results["knn_top1_k5"] <= 1
    assert np.all(np.isfinite(_losses(workdir)))


def test_bfloat16_trains_end_to_end_with_float32_state(npz, tmp_path):
    """bfloat16 compute: finite losses and k-NN, and the parameters and optimizer
    state stay float32 in the checkpoint."""
    workdir = str(tmp_path / "run")
    config = end_to_end_config(SIMCLR, npz, **{"train.dtype": "bfloat16"})
    results = train.train_and_evaluate(config, workdir)
    assert results["step"] == 3 and 0 <= results["knn_top1_k5"] <= 1
    losses = _losses(workdir)
    assert len(losses) == 3 and np.all(np.isfinite(losses))
    state = train.prepare(config, workdir).restore_state()
    dtypes = {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))
              if np.issubdtype(leaf.dtype, np.floating)}
    assert dtypes == {np.dtype(np.float32)}


def _vit_config(**overrides):
    """The tiny ViT-T/4 SimCLR recipe; FSDP splits leaves of 2**10 elements or more."""
    return tiny_config(SIMCLR, **{**SMALL_BACKBONE, "train.fsdp_min_size": 2**10, **overrides})


def _two_steps(config, workdir: str):
    """The run `train.prepare` builds from `config` (its mesh from `config.mesh`) and
    its params after two steps of the trainer's own step on one synthetic batch."""
    run = train.prepare(config, workdir)
    state = run.init_state()
    batch = sharding.global_batch(synthetic_batch(config), run.mesh)
    step = train.make_train_step(run)
    for _ in range(2):
        state, _ = step(state, batch)
    return run, jax.device_get(state.params)


def _placement(run) -> dict[str, PartitionSpec]:
    """Partition spec of every train-state leaf, by its '/'-joined path."""
    return {"/".join(path_names(keypath)): leaf.sharding.spec for keypath, leaf
            in jax.tree_util.tree_flatten_with_path(run.abstract_state)[0]}


def test_fsdp_mesh_equals_data_parallel(tmp_path):
    """On (data 4, fsdp 2) and (data 1, fsdp 8) meshes the same train step, with the
    batch split over both axes and the blocks' kernels (and their optimizer moments)
    over `fsdp`, gives data parallel's params after two steps."""
    _, want = _two_steps(_vit_config(), str(tmp_path / "dp"))
    for mesh in (DATA_FSDP, ALL_FSDP):
        config = _vit_config(**{"mesh": mesh, "train.param_sharding": "fsdp"})
        run, got = _two_steps(config, str(tmp_path / "_".join(f"{a}{n}" for a, n in mesh)))
        assert dict(run.mesh.shape) == dict(mesh)
        assert sharding.data_sharding(run.mesh).spec == PartitionSpec(("data", "fsdp"))
        placed = _placement(run)
        kernels = [path for path in placed if re.search(r"block\d/.*kernel$", path)]
        assert len(kernels) >= 2 * 2 * 4  # 2 blocks x (params, LARS momentum) x 4
        assert all("fsdp" in placed[path] for path in kernels), placed
        assert not any("data" in spec for spec in placed.values())
        for path in ("params/backbone/norm/scale", "step"):
            assert placed[path] == PartitionSpec()
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6),
                     got, want)


def test_fsdp_rules_and_min_size_place_leaves():
    """Under FSDP a leaf is split when a rule is found in its path or it is large
    enough, along its largest divisible axis; on the 1-D default mesh over `data`."""
    def leaf(*shape):
        return jax.ShapeDtypeStruct(shape, np.float32)

    tree = {"params": {"backbone": {
        "block0": {"fc1": {"kernel": leaf(64, 256), "bias": leaf(256)},
                   "attn": {"query": {"kernel": leaf(64, 2, 32)}}},
        "head": {"kernel": leaf(3, 5)}}}}

    def specs(mesh, strategy="fsdp", **kwargs):
        placed = sharding.state_shardings(tree, mesh, strategy, **kwargs)
        return {"/".join(path_names(k)): s.spec
                for k, s in jax.tree_util.tree_flatten_with_path(placed)[0]}

    mesh = sharding.make_mesh(axes=DATA_FSDP)
    got = specs(mesh, min_size=2**14, rules=("attn/", "head"))
    assert got == {
        "params/backbone/block0/fc1/kernel": PartitionSpec(None, "fsdp"),  # by size
        "params/backbone/block0/fc1/bias": PartitionSpec(),
        "params/backbone/block0/attn/query/kernel": PartitionSpec("fsdp", None, None),  # rule
        "params/backbone/head/kernel": PartitionSpec(),  # no axis divisible by 2
    }
    assert set(specs(mesh, "replicated").values()) == {PartitionSpec()}
    one_d = specs(sharding.make_mesh(), min_size=2**14)
    assert one_d["params/backbone/block0/fc1/kernel"] == PartitionSpec(None, "data")
    assert one_d["params/backbone/block0/attn/query/kernel"] == PartitionSpec()


@pytest.mark.parametrize(("mesh", "message"), [
    ((("data", 3),), r"config\.mesh=\(\('data', 3\),\): its sizes multiply to 3, which does "
                     r"not equal the 8 devices"),
    ((("data", 3), ("fsdp", -1)), r"multiply to 3, which does not divide the 8 devices"),
    ((("data", -1), ("fsdp", -1)), r"config\.mesh=.* more than one -1"),
    ((("data", 4), ("model", 2)), r"config\.mesh names the axis 'model'; the axes are data, fsdp"),
    ((("data", 4), ("data", 2)), r"config\.mesh=.* names an axis twice"),
    ((("data", 0),), r"config\.mesh=.* sizes must be positive integers or -1"),
    (("data", 8), r"config\.mesh=\('data', 8\) is not a tuple of \(axis name, size\) pairs"),
])
def test_mesh_errors_name_the_field(mesh, message):
    """An impossible `config.mesh` is one ConfigError line, raised by `prepare` before
    anything is built or compiled."""
    with pytest.raises(ConfigError, match=message) as error:
        train.prepare(_vit_config(mesh=mesh), "/nonexistent")
    assert "\n" not in str(error.value)


def test_mesh_from_the_command_line_and_the_saved_config():
    """`--config.mesh='((\"data\",4),(\"fsdp\",2))'` gives a tuple of pairs; the saved
    JSON config reads its lists back as the same tuples, and the mesh takes either."""
    values = flags.FlagValues()
    argv = ["prog", f"--config={os.path.join(REPO, SIMCLR)}",
            '--config.mesh=(("data",4),("fsdp",2))', '--config.train.fsdp_rules=("attn/",)']
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    config = values.config
    assert config.mesh == DATA_FSDP and config.train.fsdp_rules == ("attn/",)
    loaded = saved_config.from_dict(json.loads(saved_config.to_json(config)))
    assert loaded.mesh == DATA_FSDP and loaded.train.fsdp_rules == ("attn/",)
    as_lists = [list(pair) for pair in DATA_FSDP]
    assert config_checks.mesh_shape(as_lists, 8) == (("data", "fsdp"), (4, 2))
    assert dict(sharding.make_mesh(axes=as_lists).shape) == {"data": 4, "fsdp": 2}


def test_scan_refuses_per_block_rules():
    """A scanned ViT has no `block{i}`: per-block lr multipliers are refused."""
    config = _vit_config(**{"model.scan": True})
    config.optim.lr_multipliers.unlock()
    config.optim.lr_multipliers["^backbone/block1/"] = 0.5
    with pytest.raises(ConfigError, match=r"config\.optim\.lr_multipliers names single ViT "
                                          r"blocks \('\^backbone/block1/'\).*config\.model\.scan"):
        train.prepare(config, "/nonexistent")


def test_memory_bench_smoke():
    """bench/memory.py's table for its tiny ViT (compile only): FSDP over 8 devices
    holds less of the train state per device than data parallel."""
    spec = importlib.util.spec_from_file_location("bench_memory",
                                                  os.path.join(REPO, "bench", "memory.py"))
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    rows = [row for row in memory.ROWS if row.mesh in ((("data", -1),), ALL_FSDP)
            and not row.remat]
    results = memory.memory_table(memory.smoke_config(), rows)
    by_name = {result["row"]: result for result in results}
    dp, fsdp = by_name["data parallel"], by_name["fsdp (data 1, fsdp 8)"]
    assert 0 < fsdp["argument"] < dp["argument"]
    assert all(result["total"] > 0 for result in results)
    assert "| data parallel |" in memory.format_table(results)
