"""Every recipe in configs/, as published and as `:runlocal`, loads, passes its
method's config checks, and (where its data is on this machine) prepares a run."""

from __future__ import annotations

import os

import pytest
from helpers import REPO, load_config

from sslx import methods, train
from sslx.methods.base import TrainLength

CONFIGS = sorted(name for name in os.listdir(os.path.join(REPO, "configs"))
                 if name.endswith(".py"))


def test_every_method_has_a_recipe():
    recipes = {load_config(f"configs/{name}").method.name for name in CONFIGS}
    assert recipes == set(methods.names())


@pytest.mark.parametrize("name", CONFIGS)
def test_recipe_and_runlocal_check_and_prepare(name, tmp_path):
    """The published recipe builds its method and passes check_config (its TFDS data,
    when it has some, is not here, so only recipes on local data prepare a run);
    `:runlocal` reads Fashion-MNIST and prepares a run (shapes only, no compile)."""
    path = f"configs/{name}"
    full = load_config(path)
    method = methods.build(full, TrainLength(total_steps=1000, steps_per_epoch=100))
    method.check_config()
    if full.data.source != "tfds":
        train.prepare(full, str(tmp_path / "full"))

    runlocal = load_config(path, "runlocal")
    assert runlocal.data.source == "idx" and runlocal.method.name == full.method.name
    run = train.prepare(runlocal, str(tmp_path / "runlocal"))
    assert run.length.steps_per_epoch == 60000 // runlocal.train.batch_size
    assert run.length.total_steps > 0
    assert type(run.method) is type(method)
