"""A workdir's checkpoint is restored only into the run that wrote it: another
state shape, optimizer or method gets a CheckpointError, and the checkpoint
stays usable by the original config."""

from __future__ import annotations

import re

import pytest
from helpers import END_TO_END_STEPS, SMALL_BACKBONE, end_to_end_config

from sslx import train
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
