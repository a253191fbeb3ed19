"""The checks every registered method passes, so a new method gets them by
registering (and shipping a recipe): the command line trains it on 8 devices,
is preempted and resumes, its first two steps equal a 1-device reference on
the same batches, and `sslx.load` restores it; `embed` gives backbone features;
its recipe's config is locked.

A method's recipe here is `helpers.method_recipe`, with a 2-block ViT-T as its
backbone whatever the recipe's (`helpers.SMALL_BACKBONE`): these checks are of
the method, and a ViT-T's programs trace and compile in a fraction of a
ResNet-18's time. ResNet recipes run whole elsewhere: SimCLR's in test_train.py,
test_cli.py and test_api.py, with the full sharded check, and every method's
loss on its own recipe in its test file."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from helpers import (
    END_TO_END_STEPS,
    SMALL_BACKBONE,
    assert_run_matches_reference,
    end_to_end_config,
    load_config,
    method_recipe,
    preempt_cli,
    resume_cli,
    synthetic_batch,
)

import sslx
from sslx import methods, models
from sslx.methods.base import TrainLength

METHODS = methods.names()
# What a method's first recipe leaves off or starts later, on from the start here so
# that it is compared across devices and restored on resuming: SwAV's queue, the
# supervised baseline's label smoothing, mixup and CutMix (its ViT recipes' settings).
LIVE_STATE = {"swav": {"method.queue_length": 16, "method.queue_start_epoch": 0.0},
              "supervised": {"method.label_smoothing": 0.1, "method.mixup_alpha": 0.8,
                             "method.cutmix_alpha": 1.0}}


@pytest.mark.parametrize("name", METHODS)
def test_trains_on_8_devices_as_on_1_and_resumes(name, npz, tmp_path, capsys):
    path, workdir = method_recipe(name), str(tmp_path / "run")
    overrides = {**SMALL_BACKBONE, **LIVE_STATE.get(name, {})}
    batches = preempt_cli(path, npz, workdir, capsys, **overrides)
    assert_run_matches_reference(end_to_end_config(path, npz, **overrides), workdir,
                                 batches, str(tmp_path / "one"))
    resume_cli(path, npz, workdir, capsys, **overrides)
    # Restored without its training length (sslx.load, export, --mode=evaluate).
    assert sslx.load(workdir).step == END_TO_END_STEPS


@pytest.mark.parametrize("name", METHODS)
def test_embed_gives_backbone_features(name, npz):
    config = end_to_end_config(method_recipe(name), npz, **SMALL_BACKBONE)
    method = methods.build(config, TrainLength(total_steps=10, steps_per_epoch=5))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    features = jax.jit(method.embed)(params, state, batch["views"][0])
    assert features.shape == (config.train.batch_size, models.feature_dim(config.model))


@pytest.mark.parametrize("name", METHODS)
def test_recipe_config_is_locked(name):
    config = load_config(method_recipe(name), "runlocal")
    assert config.method.name == name
    with pytest.raises(AttributeError, match="does not exist"):
        config.method.not_a_field = 1.0
    with pytest.raises(AttributeError, match="does not exist"):
        config.train.not_a_field = 1
