"""A run starting from another run's weights (`config.init`): the backbone (or every
leaf that fits) comes from the other run's checkpoint, the rest is freshly initialised."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from helpers import tiny_config

from sslx import train
from sslx.checkpoint import Checkpointer, describe, path_names
from sslx.errors import CheckpointError

BYOL = "configs/byol_resnet50.py"
QUIET = {"evals.knn.enabled": False, "eval.export_at_end": False}


@pytest.fixture(scope="module")
def simclr(npz, tmp_path_factory):
    """`(workdir, final state)` of a 2-step SimCLR run."""
    workdir = str(tmp_path_factory.mktemp("init") / "simclr")
    config = tiny_config(npz=npz, **QUIET)
    train.train_and_evaluate(config, workdir)
    return workdir, jax.device_get(train.prepare(config, workdir).restore_state())


def _leaves(tree) -> dict[tuple[str, ...], np.ndarray]:
    return {path_names(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_equal(got, want, what: str) -> None:
    got, want = _leaves(got), _leaves(want)
    assert got.keys() == want.keys(), what
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=f"{what} {path}")


def test_byol_starts_from_the_backbone_of_a_simclr_run(simclr, npz, tmp_path, caplog):
    source, trained = simclr
    config = tiny_config(BYOL, npz=npz, **{"init.checkpoint": source, **QUIET})
    run = train.prepare(config, str(tmp_path / "byol"))
    with caplog.at_level("INFO", logger="sslx"):
        state = jax.device_get(run.initial_state())
    fresh = jax.device_get(run.init_state())
    assert "init from" in caplog.text and "leaves taken" in caplog.text
    backbone = {"params": trained.params["backbone"],
                "batch_stats": trained.method_state["batch_stats"]["backbone"]}
    assert not np.allclose(*(np.asarray(jax.tree.leaves(tree["backbone"])[0])
                             for tree in (trained.params, fresh.params)))
    copies = 0  # every backbone of the new run (online and EMA target) is SimCLR's
    for part in ("params", "method_state"):
        for path, value in _leaves(getattr(state, part)).items():
            if "backbone" in path:
                at = path.index("backbone")
                collection = "batch_stats" if "batch_stats" in path[:at] else "params"
                np.testing.assert_array_equal(
                    value, _leaves(backbone[collection])[path[at + 1:]], err_msg=str(path))
                copies += 1
            else:  # heads, predictor, everything else: as a fresh run initialises them
                np.testing.assert_array_equal(value, _leaves(getattr(fresh, part))[path],
                                              err_msg=str(path))
    assert copies == 2 * len(_leaves(backbone))
    _assert_equal(state.opt_state, fresh.opt_state, "optimizer state")
    assert int(state.step) == 0

    workdir = str(tmp_path / "trained")
    assert train.train_and_evaluate(config, workdir)["step"] == 2
    caplog.clear()
    with caplog.at_level("INFO", logger="sslx"):  # a resumed run restores its own workdir
        train.train_and_evaluate(config, workdir)
    assert "resuming from step 2" in caplog.text and "init from" not in caplog.text


def test_all_takes_every_leaf_whose_path_and_shape_match(simclr, npz, tmp_path, caplog):
    """Another SimCLR with a wider projector output, from a step's directory: the
    backbone and the projector's first layer are taken, its last layer is not."""
    source, trained = simclr
    config = tiny_config(npz=npz, **{"init.checkpoint": os.path.join(source, "checkpoints", "2"),
                                     "init.parts": "all", "method.projector_dim": 64, **QUIET})
    run = train.prepare(config, str(tmp_path / "wide"))
    with caplog.at_level("INFO", logger="sslx"):
        state = jax.device_get(run.initial_state())
    fresh = jax.device_get(run.init_state())
    mismatched = []
    for part in ("params", "method_state"):
        got, before, saved = (_leaves(getattr(tree, part)) for tree in (state, fresh, trained))
        assert got.keys() == saved.keys()
        for path in got:
            if got[path].shape == saved[path].shape:
                np.testing.assert_array_equal(got[path], saved[path], err_msg=str(path))
            else:
                np.testing.assert_array_equal(got[path], before[path], err_msg=str(path))
                assert f"{part}/{'/'.join(path)} (shape" in caplog.text
                mismatched.append((part, *path))
    assert mismatched and all("projector" in path for path in mismatched)
    assert any(path[:2] == ("params", "projector") for path in mismatched)


def test_missing_checkpoint_is_named_before_anything_compiles(npz, tmp_path, monkeypatch):
    monkeypatch.setattr(train.Run, "init_state", lambda run: pytest.fail("compiled"))
    missing = str(tmp_path / "no_such_run")
    config = tiny_config(npz=npz, **{"init.checkpoint": missing, **QUIET})
    with pytest.raises(CheckpointError, match=r"config\.init\.checkpoint=.*no_such_run"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "config.json")


@pytest.mark.parametrize("parts, message", [
    ("backbone", r"shares no backbone weights with this run: params/backbone/.* \(not in the"),
    ("all", r"shares no weights with this run: params/backbone/.* \(not in the checkpoint\)"),
])
def test_checkpoint_sharing_nothing_is_refused(parts, message, npz, tmp_path, monkeypatch):
    """A checkpoint whose state has other names: refused, naming the path, before compiling."""
    monkeypatch.setattr(train.Run, "init_state", lambda run: pytest.fail("compiled"))
    other = tiny_config(npz=npz)
    checkpointer = Checkpointer(str(tmp_path / "other"), every_steps=1, keep=1)
    checkpointer.save(1, {"params": {"encoder": {"kernel": np.ones((3, 8), np.float32)}},
                          "method_state": {}}, describe(other), force=True)
    checkpointer.wait()
    checkpointer.close()
    config = tiny_config(npz=npz, **{"init.checkpoint": str(tmp_path / "other"),
                                     "init.parts": parts, **QUIET})
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'other'}.*{message}"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
