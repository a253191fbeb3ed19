"""Tiny configs, data and checks shared by the tests of every method."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import json
import logging
import os
import re
import signal
import sys
from typing import Any
from unittest import mock

import jax
import numpy as np
import optax
import pytest
from absl import flags

from sslx import config_defaults, main, methods, sharding, train
from sslx.config_defaults import FASHION_MNIST_IDX_DIR
from sslx.data import pipeline, sources
from sslx.data.device_augment import finish_batch
from sslx.data.spec import input_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_fmnist_npz(path: str, train_size: int = 256, test_size: int = 128) -> str:
    """The first Fashion-MNIST images of each split as an `arrays` source (.npz), for
    fast end-to-end runs. Reads only those records of the IDX files, nothing more."""
    cfg = config_defaults.base_config()
    cfg.data.path = FASHION_MNIST_IDX_DIR
    arrays = {}
    for split, count in (("train", train_size), ("test", test_size)):
        images_path, labels_path = sources._idx_paths(cfg.data, split)
        arrays[f"{split}_images"] = _idx_head(images_path, count)
        arrays[f"{split}_labels"] = _idx_head(labels_path, count).astype(np.int32)
    np.savez(path, **arrays)
    return path


def _idx_head(path: str, count: int) -> np.ndarray:
    """The first `count` records of an IDX file (gzipped or not)."""
    with sources._open_idx(path) as f:
        prefix = f.read(4)
        rank = prefix[3] if len(prefix) == 4 else 0
        dims = sources._idx_header(path, prefix + f.read(4 * rank))
        record = int(np.prod(dims[1:]))
        data = f.read(count * record)
    if len(data) != count * record:
        raise ValueError(f"{path} holds fewer than {count} records")
    return np.frombuffer(data, np.uint8).reshape(count, *dims[1:])


def load_config(relative_path: str, arg: str | None = None):
    """`get_config(arg)` of a config file, as `--config=path:arg` would load it."""
    spec = importlib.util.spec_from_file_location("sslx_test_config",
                                                  os.path.join(REPO, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def method_recipe(name: str) -> str:
    """The recipe the shared checks run for method `name` (`test_conformance.py`):
    its first `configs/<name>_*.py` in sorted order, CIFAR-10 and Fashion-MNIST
    recipes last (their data is never read: `:runlocal` runs on the `npz` arrays)."""
    paths = sorted(glob.glob(os.path.join(REPO, "configs", f"{name}_*.py")),
                   key=lambda path: ("cifar10" in path or "fmnist" in path, path))
    assert paths, f"method {name!r} has no recipe configs/{name}_*.py"
    return os.path.relpath(paths[0], REPO)


def tiny_config(path: str = "configs/simclr_resnet50.py", npz: str | None = None,
                **overrides):
    """A recipe's `:runlocal` variant shrunk to seconds (see `tiny_overrides`);
    `overrides` are dotted keys, e.g. `**{"optim.base_lr": 0.1}`."""
    config = load_config(path, "runlocal")
    config.unlock()
    for key, value in {**tiny_overrides(config, npz), **overrides}.items():
        config_defaults.set_field(config, key, value)
    config.lock()
    return config


def tiny_overrides(runlocal_config, npz: str | None = None) -> dict:
    """Dotted keys that shrink a `:runlocal` config to seconds: views <= 16 px, width-8
    ResNet or 2-block ViT, batch 16, 2 steps, no warmup, k-NN the only monitor; read
    from `npz` if given.
    Method fields (heads, queues) stay the recipe's."""
    largest = max(group.size for group in runlocal_config.views.values())
    overrides = {f"views.{name}.size": max(4, group.size * 16 // largest // 4 * 4)
                 for name, group in runlocal_config.views.items()}
    overrides.update({
        "model.width": 8, "model.depth": 2, "train.batch_size": 16, "train.steps": 2,
        "train.log_every": 1, "optim.warmup_epochs": 0.0, "checkpoint.every_steps": 1,
        "eval.batch_size": 64, "evals.knn.ks": (5,),
        # Off: one more pass over the eval split per run; test_linear_eval.py and
        # test_api.py check the collapse monitors.
        "evals.collapse.enabled": False})
    if npz:
        overrides.update({"data.source": "arrays", "data.path": npz})
    return overrides


def run_cli(path: str, workdir: str, npz: str, **overrides) -> None:
    """`python -m sslx.main --config=PATH:runlocal --workdir=WORKDIR --config.k=v ...`
    with the `tiny_overrides`, in this process (so compiles hit the warm cache)."""
    fields = {**tiny_overrides(load_config(path, "runlocal"), npz), **overrides}
    run_main(f"--config={path}:runlocal", f"--workdir={workdir}", "--distributed=off",
             *(f"--config.{key}={value}" for key, value in fields.items()))


def run_main(*args: str) -> None:
    """`python -m sslx.main ARGS` in this process: absl's flag parsing (`main.parse_flags`)
    then `main.main`; a `sys.exit` of either raises SystemExit here. The flags and
    logging are left as they were."""
    argv = ["sslx.main", *args]
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    flags.FLAGS.unparse_flags()
    try:
        with mock.patch.object(sys, "argv", argv):  # config overrides are read from it
            main.main(main.parse_flags(argv))
    finally:  # main() configures logging for a terminal; give pytest its own back
        logging.root.handlers[:] = root_handlers
        logging.root.setLevel(root_level)
        flags.FLAGS.unparse_flags()
        for name in [name for name in flags.FLAGS if name.startswith("config.")]:
            delattr(flags.FLAGS, name)  # the override flags this parse defined
        flags.FLAGS.mark_as_parsed()  # as conftest.py left them


def exit_message(*args: str) -> str:
    """What `python -m sslx.main ARGS` exits with, run in this process (`run_main`):
    the message it would print to stderr."""
    with pytest.raises(SystemExit) as exit:
        run_main(*args)
    return str(exit.value.code)


def synthetic_batch(config, seed: int = 0) -> dict:
    """A random global batch with the structure the pipeline yields for the inputs of
    the config's method: normal floats (views), labels 0..9, booleans (masks) true
    with probability 0.3."""
    rng = np.random.default_rng(seed)
    spec = input_spec(config)
    inputs = methods.build(config, train.EMBED_ONLY, spec).inputs

    def fill(leaf: np.ndarray) -> np.ndarray:
        if leaf.dtype == np.bool_:
            return rng.random(leaf.shape) < 0.3
        if leaf.dtype == np.uint8:  # the crops of device augmentation
            return rng.integers(0, 256, leaf.shape, dtype=np.uint8)
        if np.issubdtype(leaf.dtype, np.integer):
            return (np.arange(leaf.size) % 10).reshape(leaf.shape).astype(leaf.dtype)
        return rng.normal(size=leaf.shape).astype(leaf.dtype)

    return jax.tree.map(fill, pipeline.example_batch(spec, config.train.batch_size,
                                                     inputs=inputs))


NUM_DEVICES = 8  # tests/conftest.py starts jax with this many CPU devices


@dataclasses.dataclass
class StepsResult:
    """What `reference_steps` / `trainer_steps` record of a few steps from the initial state."""

    init: Any  # TrainState before the first step (host numpy arrays)
    final: Any  # TrainState after the last step
    metrics: list[dict]  # per step
    grads: Any  # gradient of the loss at the initial state (first step's batch)


def reference_steps(config, workdir: str, devices, steps: int = 2,
                    batches: list[dict] | None = None) -> StepsResult:
    """`steps` steps on one synthetic batch (or on `batches`, one per step), written
    here from the `Method` contract (loss and gradient, optimizer update, `project`,
    `after_update`) rather than with `train.make_train_step`, so a mistake in the
    trainer's step does not also shape the reference."""
    run = train.prepare(config, workdir, mesh=sharding.make_mesh(devices))
    method, optimizer = run.method, run.optimizer

    @jax.jit
    def step(state, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        (loss, (method_state, metrics)), grads = jax.value_and_grad(method.loss, has_aux=True)(
            state.params, state.method_state, batch, rng, state.step)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = method.project(optax.apply_updates(state.params, updates))
        method_state = method.after_update(params, method_state, state.step)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  method_state=method_state)
        return new_state, {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}, grads

    batches = batches or [synthetic_batch(config)] * steps
    state = run.init_state()
    init, metrics, first_grads = jax.device_get(state), [], None
    for batch in batches:
        state, step_metrics, grads = step(state, sharding.global_batch(batch, run.mesh))
        metrics.append(jax.device_get(step_metrics))
        first_grads = jax.device_get(grads) if first_grads is None else first_grads
    return StepsResult(init, jax.device_get(state), metrics, first_grads)


def trainer_steps(config, workdir: str, devices, steps: int = 2) -> StepsResult:
    """`steps` steps of the trainer's own jitted step (`train.make_train_step`) on one
    batch, and the gradient of `method.loss` at the initial state on the same mesh."""
    run = train.prepare(config, workdir, mesh=sharding.make_mesh(devices))
    method = run.method
    state = run.init_state()
    init = jax.device_get(state)
    batch = sharding.global_batch(synthetic_batch(config), run.mesh)
    rng = jax.random.fold_in(state.rng, state.step)
    # The batch the method sees: with device augmentation, the step's views.
    seen = finish_batch(batch, rng, run.spec)
    grad_fn = jax.jit(jax.grad(lambda p, s, b, r, t: method.loss(p, s, b, r, t)[0]))
    grads = jax.device_get(grad_fn(state.params, state.method_state, seen, rng, state.step))
    step, metrics = train.make_train_step(run), []
    for _ in range(steps):
        state, step_metrics = step(state, batch)
        metrics.append(jax.device_get(step_metrics))
    return StepsResult(init, jax.device_get(state), metrics, grads)


def assert_tree_close(got, want, what: str, rtol: float,
                      skip: frozenset[str] = frozenset()) -> None:
    """Leaf by leaf, ||got - want|| <= rtol * (||want|| + 1e-2 * the largest leaf norm);
    integer leaves exactly equal; leaves at the paths in `skip` (`keystr`) not compared.
    The floor is for leaves that are rounding noise, whose value depends on the order
    of a sum: the gradient of a bias that BatchNorm removes or of an attention key
    bias (softmax ignores it)."""
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(want)]
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_leaves) == len(want_leaves), what
    norms = [float(np.linalg.norm(np.asarray(w).astype(np.float64))) for w in want_leaves]
    floor = 1e-2 * rtol * max(norms, default=0.0)
    for path, g, w, norm in zip(paths, got_leaves, want_leaves, norms, strict=True):
        if path in skip:
            continue
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, f"{what}{path}: shape {g.shape} != {w.shape}"
        if not np.issubdtype(w.dtype, np.inexact):
            np.testing.assert_array_equal(g, w, err_msg=f"{what}{path}")
            continue
        error = float(np.linalg.norm(g.astype(np.float64) - w))
        assert error <= rtol * norm + floor, (
            f"{what}{path}: |got - want| = {error:.3g}, |want| = {norm:.3g}")


def rounding_noise(grads) -> frozenset[str]:
    """Paths of the params whose gradient is rounding noise, below 1e-6 of the largest
    leaf's: an attention key bias (softmax ignores it). Adam divides that noise by its
    own size, so the update of such a param is a full-size step whose sign depends on
    the order of a sum, and differs between 1 and 8 devices: their changes are not
    compared (their gradients are, at the floor of `assert_tree_close`)."""
    norms = {jax.tree_util.keystr(path): float(np.linalg.norm(np.asarray(g, np.float64)))
             for path, g in jax.tree_util.tree_leaves_with_path(grads)}
    largest = max(norms.values(), default=0.0)
    return frozenset(path for path, norm in norms.items() if norm <= 1e-6 * largest)


def _delta(after, before):
    """after - before for float leaves (what the steps changed), the values otherwise."""

    def change(a, b):
        a = np.asarray(a)
        return a.astype(np.float64) - b if np.issubdtype(a.dtype, np.inexact) else a

    return jax.tree.map(change, after, before)


def _assert_same_changes(final, init, one: StepsResult) -> None:
    """`final - init` of params, optimizer and method state against the reference's
    changes at 1e-2, params whose gradient is rounding noise left out."""
    for part in ("params", "opt_state", "method_state"):
        assert_tree_close(_delta(getattr(final, part), getattr(init, part)),
                          _delta(getattr(one.final, part), getattr(one.init, part)),
                          f"change of {part}", rtol=1e-2,
                          skip=rounding_noise(one.grads) if part == "params" else frozenset())


def assert_sharded_step_matches(config, tmp_path) -> StepsResult:
    """Two steps of the trainer on 8 devices against a reference on 1 device: the
    same losses and metrics, the same gradient (at the initial state and in the
    trainer's `grad_norm`), the same updates (params after minus params before) and
    the same changes to optimizer and method state.

    Compared where a bug would show: a LARS step moves a weight by ~1e-5 of its
    size and Adam's first step is lr * sign(g), so the params themselves hide a wrong
    gradient scale. Gradients are compared at 1e-3 of their norm and the changes at
    1e-2 (1 and 8 devices differ by < 2e-4 in every method), which a factor-of-2
    error fails by far. Returns the 1-device result.

    The trainer's 8-device step is the very program `assert_trains_and_resumes` runs
    on an `end_to_end_config`, so the two tests share its compile."""
    devices = jax.devices()
    assert len(devices) == NUM_DEVICES and jax.default_backend() == "cpu", (
        f"the tests need {NUM_DEVICES} CPU devices (tests/conftest.py), jax has {devices}")
    one = reference_steps(config, str(tmp_path / "one"), devices[:1])
    eight = trainer_steps(config, str(tmp_path / "eight"), devices)
    assert_same_steps(eight, one)
    return one


def assert_same_steps(eight: StepsResult, one: StepsResult) -> None:
    """The comparisons of `assert_sharded_step_matches`, of any two step records."""
    assert_tree_close(eight.init, one.init, "initial state", rtol=1e-6)
    assert_tree_close(eight.grads, one.grads, "gradient", rtol=1e-3)
    for step, (got, want) in enumerate(zip(eight.metrics, one.metrics, strict=True)):
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-4, atol=1e-6,
                                   err_msg=f"loss of step {step + 1}")
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-3, atol=1e-6,
                                       err_msg=f"{name} of step {step + 1}")
    assert int(eight.final.step) == int(one.final.step) == len(one.metrics)
    _assert_same_changes(eight.final, eight.init, one)


def logged_steps(workdir: str) -> list[int]:
    """Steps of the training lines in workdir/metrics.jsonl, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if '"loss"' in line]


# The backbone the method checks run on whatever their recipe's (test_conformance.py):
# a ViT-T/4 of `tiny_overrides`' 2 blocks traces and compiles far faster than a ResNet.
SMALL_BACKBONE = {"model.name": "vit_t", "model.patch_size": 4}
END_TO_END_STEPS = 3  # `assert_trains_and_resumes`: preempted after step 2, resumed to 3


def end_to_end_config(path: str, npz: str, **overrides):
    """The config `assert_trains_and_resumes` runs for a recipe. A sharded-step check
    on it compiles the very train step the CLI runs, so the two share one compile."""
    return tiny_config(path, npz=npz, **{"train.steps": END_TO_END_STEPS, **overrides})


@contextlib.contextmanager
def preempted_after(steps: int):
    """The run receives SIGTERM, as on a preemption notice, while it reads the batch of
    step `steps`: it trains that step, saves it and returns. Yields the list of the
    batches the run was given."""
    stream, given = pipeline.train_iterator, []

    def preempted(*args, **kwargs):
        batches = stream(*args, **kwargs)
        for step in range(1, steps + 1):
            given.append(next(batches))
            if step == steps:
                os.kill(os.getpid(), signal.SIGTERM)
            yield given[-1]
        raise AssertionError(f"the run asked for a batch after the SIGTERM of step {steps}")

    with mock.patch.object(pipeline, "train_iterator", preempted):
        yield given


def preempt_cli(path: str, npz: str, workdir: str, capsys, **overrides) -> list[dict]:
    """`python -m sslx.main --config=PATH:runlocal` (8 devices) gets SIGTERM in step 2
    of 3 and exits normally: its checkpoint and metrics of steps 1 and 2 are in
    `workdir`, no k-NN. Returns the two batches it trained on. `overrides`: more
    `--config.k=v`."""
    with preempted_after(2) as batches:
        run_cli(path, workdir, npz, **{"train.steps": END_TO_END_STEPS, **overrides})
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
    assert logged_steps(workdir) == [1, 2]
    assert "k-NN" not in capsys.readouterr().out
    return batches


def resume_cli(path: str, npz: str, workdir: str, capsys, **overrides) -> None:
    """The same command again resumes from the step-2 checkpoint, finishes and prints
    the k-NN line."""
    run_cli(path, workdir, npz, **{"train.steps": END_TO_END_STEPS, **overrides})
    assert logged_steps(workdir) == [1, 2, 3]
    assert re.search(r"^k-NN top-1: [01]\.\d{4} \(k=5\)$", capsys.readouterr().out, re.M)


def assert_trains_and_resumes(path: str, npz: str, workdir: str, capsys) -> None:
    """`preempt_cli`, then `resume_cli`."""
    preempt_cli(path, npz, workdir, capsys)
    resume_cli(path, npz, workdir, capsys)


def assert_run_matches_reference(config, workdir: str, batches: list[dict],
                                 reference_workdir: str) -> None:
    """The first two steps a `preempt_cli` run took on 8 devices against `reference_steps`
    on 1 device, on the `batches` it trained on: the same logged losses and
    metrics (`grad_norm` among them, so a wrong gradient scale shows) and the same
    changes to params, optimizer and method state in its step-2 checkpoint.

    The cheap form of `assert_sharded_step_matches` for end-to-end runs: the 8-device
    side is the run itself, so nothing is compiled for it twice."""
    devices = jax.devices()
    assert len(devices) == NUM_DEVICES and jax.default_backend() == "cpu", (
        f"the tests need {NUM_DEVICES} CPU devices (tests/conftest.py), jax has {devices}")
    one = reference_steps(config, reference_workdir, devices[:1], batches=batches)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [line for line in map(json.loads, f) if "loss" in line]
    for step, (got, want) in enumerate(zip(logged, one.metrics, strict=True)):
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-4 if name == "loss" else 1e-3,
                                       atol=1e-6, err_msg=f"{name} of step {step + 1}")
    saved = jax.device_get(train.prepare(config, workdir).restore_state())
    assert int(saved.step) == int(one.final.step) == 2
    _assert_same_changes(saved, one.init, one)
