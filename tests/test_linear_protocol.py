"""The papers' linear protocol (`supervised` with `method.frozen_backbone`,
configs/linear_*.py) and the ResNet-50 fine-tuning recipe: a linear run started from a
pretrained one trains through the command line and resumes with its backbone's params
and BatchNorm statistics bit-identical to the pretrained ones, weight decay on; no
gradient reaches the backbone, which runs in inference mode; no optimizer moves it;
a contradictory config is refused; the recipes hold their official code's values;
LARS leaves SimCLR's fine-tuned head out of its adaptation."""

from __future__ import annotations

import copy
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers import (
    SMALL_BACKBONE,
    exit_message,
    load_config,
    logged_steps,
    preempt_cli,
    run_cli,
    synthetic_batch,
    tiny_config,
)

from sslx import checkpoint, methods, optim, saved_config, train
from sslx.errors import ConfigError
from sslx.methods.base import TrainLength

LINEAR = "configs/linear_resnet50.py"
FINETUNE = "configs/supervised_resnet50_finetune.py"
QUIET = {"evals.knn.enabled": False, "evals.collapse.enabled": False,
         "eval.export_at_end": False}
Path = tuple[str, ...]


def _saved_arrays(path: str) -> dict[Path, np.ndarray]:
    """Every param and method-state array of the checkpoint at `path` (a workdir: its
    latest step; or one step's directory), by path."""
    saved = checkpoint.SavedRun(path)
    try:
        leaves = jax.tree.leaves(saved.leaves, is_leaf=lambda x: isinstance(x, checkpoint.Leaf))
        return saved.read([leaf.path for leaf in leaves
                           if leaf.path[0] in ("params", "method_state")])
    finally:
        saved.close()


def _backbone(arrays: dict[Path, np.ndarray]) -> dict[Path, np.ndarray]:
    """The backbone's params and BatchNorm statistics among `arrays`."""
    return {path: value for path, value in arrays.items()
            if path[:2] == ("params", "backbone")
            or path[:3] == ("method_state", "batch_stats", "backbone")}


@pytest.fixture(scope="module")
def pretrained(npz, tmp_path_factory) -> str:
    """The workdir of a 2-step SimCLR run (a width-8 ResNet-18, as the linear recipe's
    `tiny_config`)."""
    workdir = str(tmp_path_factory.mktemp("linear") / "simclr")
    train.train_and_evaluate(tiny_config(npz=npz, **QUIET), workdir)
    return workdir


def test_linear_run_keeps_the_pretrained_backbone_and_resumes(pretrained, npz, tmp_path,
                                                               capsys):
    """Preempted after step 2 of 3 and resumed through the command line, weight decay
    on: at every saved step the backbone's params and statistics are the pretrained
    run's, bit for bit, while the head learns."""
    workdir = str(tmp_path / "linear")
    overrides = {"init.checkpoint": pretrained, "optim.weight_decay": 0.1, **QUIET}
    preempt_cli(LINEAR, npz, workdir, capsys, **overrides)
    run_cli(LINEAR, workdir, npz, **{"train.steps": 3, **overrides})
    assert logged_steps(workdir) == [1, 2, 3]
    assert "classifier top-1: " in capsys.readouterr().out

    source = _backbone(_saved_arrays(pretrained))
    assert any(path[1] == "batch_stats" for path in source)
    steps = {step: _saved_arrays(os.path.join(workdir, "checkpoints", str(step)))
             for step in (1, 3)}
    for step, arrays in steps.items():
        backbone = _backbone(arrays)
        assert backbone.keys() == source.keys()
        for path, value in source.items():
            np.testing.assert_array_equal(backbone[path], value, err_msg=f"step {step} {path}")
    head = [path for path in steps[1] if path[:2] == ("params", "head")]
    assert len(head) == 2  # one Dense layer: kernel and bias, no BatchNorm
    assert not any(path[:3] == ("method_state", "batch_stats", "head") for path in steps[1])
    for path in head:
        assert not np.array_equal(steps[1][path], steps[3][path]), path


def test_backbone_gets_no_gradient_and_runs_in_inference_mode():
    """The loss's gradient is exactly zero on every backbone param; its BatchNorm
    statistics come back unchanged and normalise the training batch: the logits are the
    head applied to the eval-mode features."""
    config = tiny_config(LINEAR)
    method = methods.build(config, TrainLength(total_steps=10, steps_per_epoch=5))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, state = method.init(jax.random.PRNGKey(0), batch)
    rng = np.random.default_rng(0)  # statistics away from their init, as pretrained ones

    def moved(path, x):
        if jax.tree_util.keystr(path).endswith("['var']"):
            return x * jnp.asarray(rng.uniform(0.5, 2.0, x.shape), x.dtype)
        return x + jnp.asarray(rng.normal(0.0, 0.1, x.shape), x.dtype)

    state = jax.tree_util.tree_map_with_path(moved, state)
    (_, (new_state, _)), grads = jax.value_and_grad(method.loss, has_aux=True)(
        params, state, batch, jax.random.PRNGKey(1), 0)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads["backbone"]):
        assert not np.any(np.asarray(grad)), f"backbone{jax.tree_util.keystr(path)}"
    assert all(np.any(np.asarray(grad)) for grad in jax.tree.leaves(grads["head"]))
    for got, want in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(got, want)

    images = batch["views"][0]
    logits = method.network().apply({"params": params, **state}, images, train=True,
                                    mutable=["batch_stats"])[0]["logits"]
    head = params["head"]["dense0"]
    want = method.embed(params, state, images) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_no_optimizer_moves_a_frozen_backbone(name, tmp_path):
    """Two updates of each optimizer with weight decay, from a gradient that is not
    zero anywhere: the backbone's updates are exactly zero, the head's are not."""
    config = tiny_config(LINEAR, **SMALL_BACKBONE, **{"optim.name": name,
                                                      "optim.weight_decay": 0.1})
    run = train.prepare(config, str(tmp_path), length=TrainLength(10, 5))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype),
                          run.abstract_state.params)
    grads = jax.tree.map(jnp.ones_like, params)
    opt_state = run.optimizer.init(params)
    for _ in range(2):
        updates, opt_state = run.optimizer.update(grads, opt_state, params)
        moved = optax.apply_updates(params, updates)
        for before, after in zip(jax.tree.leaves(params["backbone"]),
                                 jax.tree.leaves(moved["backbone"]), strict=True):
            np.testing.assert_array_equal(after, before)
        assert all(np.any(np.asarray(u)) for u in jax.tree.leaves(updates["head"]))
        params = moved


def test_drop_path_on_a_frozen_backbone_is_refused(npz, tmp_path, monkeypatch):
    """A frozen backbone runs in inference mode, which drops no path: refused before
    anything compiles, naming both fields."""
    monkeypatch.setattr(train.Run, "init_state", lambda run: pytest.fail("compiled"))
    message = exit_message(
        "--config=configs/linear_vits16.py:runlocal", f"--workdir={tmp_path}",
        "--distributed=off", "--config.data.source=arrays", f"--config.data.path={npz}",
        "--config.model.drop_path=0.1")
    assert message == (
        "sslx: config.method.frozen_backbone=True runs the backbone in inference mode, "
        "which drops no path, but config.model.drop_path=0.1: set config.model.drop_path=0 "
        "for the linear protocol, or config.method.frozen_backbone=False to fine-tune with "
        "drop-path")


def test_recipes_take_their_official_codes_values():
    """moco-v3 `main_lincls.py`'s and dino `eval_linear.py`'s defaults; SimCLR's
    fine-tuning: LARS at 0.005 x sqrt(B), no weight decay, a zero head out of LARS."""
    for path, batch, lr, epochs in ((LINEAR, 1024, 0.1, 90.0),
                                    ("configs/linear_vits16.py", 1024, 0.001, 100.0)):
        config = load_config(path)
        assert (config.train.batch_size, config.optim.base_lr, config.train.epochs) == (
            batch, lr, epochs)
        assert config.method.frozen_backbone and config.method.head_init == "normal_0.01"
        assert (config.optim.name, config.optim.momentum, config.optim.weight_decay,
                config.optim.warmup_epochs, config.optim.lr_per_epoch) == (
            "sgd", 0.9, 0.0, 0.0, True)
        assert config.views.global_crops.crop_scale == (0.08, 1.0)
        assert config.model.drop_path == 0.0 and config.init.parts == "backbone"
    finetune = load_config(FINETUNE)
    assert not finetune.method.frozen_backbone and finetune.method.head_init == "zeros"
    assert optim.scaled_learning_rate(finetune.optim.base_lr, finetune.optim.lr_scaling,
                                      1024) == pytest.approx(0.005 * math.sqrt(1024))
    assert (finetune.train.batch_size, finetune.train.epochs, finetune.optim.name,
            finetune.optim.weight_decay, finetune.optim.warmup_epochs) == (
        1024, 30.0, "lars", 0.0, 0.0)
    assert finetune.views.global_crops.jitter_prob == 0.0


def test_lars_leaves_the_excluded_head_out_of_adaptation_and_decay():
    """`optim.exclude_from_decay` (SimCLR's `head_supervised`): the head's first LARS
    step is lr x gradient, a kernel's is scaled by its trust ratio 1e-3 |w| / |g + wd w|;
    a regex matching no param is refused when the state is initialised."""
    c = copy.deepcopy(load_config(FINETUNE).optim)
    c.weight_decay = 0.1
    optimizer, _ = optim.build_optimizer(c, global_batch_size=256, total_steps=10,
                                         steps_per_epoch=5)
    rng = np.random.default_rng(0)
    params = {"backbone": {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 4)))}},
              "head": {"dense0": {"kernel": jnp.asarray(rng.normal(size=(4, 2))),
                                  "bias": jnp.asarray(rng.normal(size=(2,)))}}}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    lr = optim.scaled_learning_rate(c.base_lr, c.lr_scaling, 256)
    for leaf in ("kernel", "bias"):
        np.testing.assert_allclose(updates["head"]["dense0"][leaf],
                                   -lr * grads["head"]["dense0"][leaf], rtol=1e-6)
    w, g = params["backbone"]["conv"]["kernel"], grads["backbone"]["conv"]["kernel"]
    decayed = g + 0.1 * w
    trust = 1e-3 * jnp.linalg.norm(w) / jnp.linalg.norm(decayed)
    np.testing.assert_allclose(updates["backbone"]["conv"]["kernel"], -lr * trust * decayed,
                               rtol=1e-5)
    c.exclude_from_decay = ("^nohead/",)
    optimizer, _ = optim.build_optimizer(c, global_batch_size=256, total_steps=10,
                                         steps_per_epoch=5)
    with pytest.raises(ConfigError, match=r"exclude_from_decay: regex '\^nohead/' matches no"):
        optimizer.init(params)


def test_a_supervised_run_saved_before_frozen_backbone_still_builds():
    """A saved config without `method.frozen_backbone` (added since) reads it as False."""
    values = load_config("configs/supervised_resnet50.py").to_dict()
    del values["method"]["frozen_backbone"]
    config = saved_config.from_dict(values)
    assert config.method.frozen_backbone is False
    assert isinstance(config, ml_collections.ConfigDict)
    methods.build(config, TrainLength(total_steps=10, steps_per_epoch=5)).check_config()
