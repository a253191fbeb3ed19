"""A workdir's checkpoint is restored only into the run that wrote it: another
state shape, optimizer or method gets a CheckpointError, and the checkpoint
stays usable by the original config; a save cut short is never resumed."""

from __future__ import annotations

import logging
import os
import re

import jax
import numpy as np
import pytest
from helpers import END_TO_END_STEPS, SMALL_BACKBONE, end_to_end_config, logged_steps

from sslx import checkpoint, train
from sslx.errors import CheckpointError

NNCLR = "configs/nnclr_resnet50.py"
SIMCLR = "configs/simclr_resnet50.py"


def _config(npz, path: str = NNCLR, **overrides):
    """The run test_conformance.py trains for NNCLR (its compiles are shared), no k-NN."""
    return end_to_end_config(path, npz, **{"evals.knn.enabled": False, **SMALL_BACKBONE,
                                           **overrides})


@pytest.fixture(scope="module")
def workdir(npz, tmp_path_factory) -> str:
    """A finished NNCLR run (the step its train and resume tests compile)."""
    workdir = str(tmp_path_factory.mktemp("checkpoint") / "run")
    assert train.train_and_evaluate(_config(npz), workdir)["step"] == END_TO_END_STEPS
    return workdir


@pytest.mark.parametrize("section, field, value", [
    ("method", "queue_size", 512),  # same model and method name, another queue
    ("optim", "name", "adamw"),  # another optimizer state
])
def test_other_state_shape_is_refused(npz, workdir, section, field, value):
    base = _config(npz)
    assert base[section][field] != value
    with pytest.raises(CheckpointError, match=re.escape(workdir)):
        train.train_and_evaluate(_config(npz, **{f"{section}.{field}": value}), workdir)
    # Nothing was lost: the original config still finds its finished run.
    assert train.train_and_evaluate(base, workdir)["step"] == END_TO_END_STEPS


def test_other_method_is_refused(npz, workdir):
    with pytest.raises(CheckpointError, match=r"config\.method\.name='nnclr'.*'simclr'"):
        train.train_and_evaluate(_config(npz, SIMCLR), workdir)


def test_export_without_checkpoint(npz, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train.export(_config(npz, SIMCLR), str(tmp_path / "empty"), "test")


def test_a_checkpoint_without_its_commit_marker_is_never_resumed(npz, workdir, tmp_path,
                                                                 caplog):
    """A save cut short (its commit marker missing) is removed with a warning, and the
    run resumes from the previous checkpoint to the uninterrupted run's end state."""
    config, cut = _config(npz), str(tmp_path / "cut")
    train.train_and_evaluate(config, cut)
    os.remove(os.path.join(cut, "checkpoints", "3", checkpoint.COMMIT_MARKER))
    run = train.prepare(config, cut)
    with caplog.at_level(logging.WARNING, logger="sslx"):
        assert run.checkpointer.latest_step() == 2
    run.checkpointer.close()
    assert "checkpoints/3 was never committed" in caplog.text
    assert not os.path.exists(os.path.join(cut, "checkpoints", "3"))
    assert train.train_and_evaluate(config, cut)["step"] == 3
    assert logged_steps(cut) == [1, 2, 3, 3]
    for a, b in zip(jax.tree.leaves(train.prepare(config, workdir).restore_state()),
                    jax.tree.leaves(train.prepare(config, cut).restore_state()), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
