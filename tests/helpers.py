"""Tiny configs, data and checks shared by the tests of every method."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import sys
from unittest import mock

import jax
import numpy as np
import pytest
from absl import flags

from sslx import config_defaults, main, methods, sharding, train
from sslx.config_defaults import FASHION_MNIST_IDX_DIR
from sslx.data import pipeline, sources
from sslx.data.spec import input_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_fmnist_npz(path: str, train_size: int = 256, test_size: int = 128) -> str:
    """A few Fashion-MNIST images as an `arrays` source (.npz), for fast end-to-end runs."""
    cfg = config_defaults.base_config()
    cfg.data.path = FASHION_MNIST_IDX_DIR
    arrays = {}
    for split, count in (("train", train_size), ("test", test_size)):
        source = sources.load_split(cfg.data, split, process_index=0, process_count=1)
        examples = list(source.dataset.take(count).as_numpy_iterator())
        arrays[f"{split}_images"] = np.stack([e["image"][..., 0] for e in examples])
        arrays[f"{split}_labels"] = np.array([e["label"] for e in examples], np.int32)
    np.savez(path, **arrays)
    return path


def load_config(relative_path: str, arg: str | None = None):
    """`get_config(arg)` of a config file, as `--config=path:arg` would load it."""
    spec = importlib.util.spec_from_file_location("sslx_test_config",
                                                  os.path.join(REPO, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


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
    ResNet or 2-block ViT, batch 16, 2 steps, no warmup; read from `npz` if given.
    Method fields (heads, queues) stay the recipe's."""
    largest = max(group.size for group in runlocal_config.views.values())
    overrides = {f"views.{name}.size": max(4, group.size * 16 // largest // 4 * 4)
                 for name, group in runlocal_config.views.items()}
    overrides.update({
        "model.width": 8, "model.depth": 2, "train.batch_size": 16, "train.steps": 2,
        "train.log_every": 1, "optim.warmup_epochs": 0.0, "checkpoint.every_steps": 1,
        "eval.batch_size": 64, "eval.knn_k": (5,)})
    if npz:
        overrides.update({"data.source": "arrays", "data.path": npz})
    return overrides


def run_cli(path: str, workdir: str, npz: str, **overrides) -> None:
    """`python -m sslx.main --config=PATH:runlocal --workdir=WORKDIR --config.k=v ...`
    with the `tiny_overrides`, in this process (so compiles hit the warm cache)."""
    fields = {**tiny_overrides(load_config(path, "runlocal"), npz), **overrides}
    argv = ["sslx.main", f"--config={path}:runlocal", f"--workdir={workdir}",
            "--distributed=off",
            *(f"--config.{key}={value}" for key, value in fields.items())]
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    flags.FLAGS.unparse_flags()
    try:
        with mock.patch.object(sys, "argv", argv):  # config overrides are read from it
            main.parse_flags(argv)
        main.main(argv)
    finally:  # main() configures logging for a terminal; give pytest its own back
        logging.root.handlers[:] = root_handlers
        logging.root.setLevel(root_level)
        flags.FLAGS.unparse_flags()
        for name in [name for name in flags.FLAGS if name.startswith("config.")]:
            delattr(flags.FLAGS, name)  # the override flags this parse defined
        flags.FLAGS.mark_as_parsed()  # as conftest.py left them


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
        if np.issubdtype(leaf.dtype, np.integer):
            return (np.arange(leaf.size) % 10).reshape(leaf.shape).astype(leaf.dtype)
        return rng.normal(size=leaf.shape).astype(leaf.dtype)

    return jax.tree.map(fill, pipeline.example_batch(config, spec, config.train.batch_size,
                                                     inputs=inputs))


def run_steps(config, workdir: str, devices, steps: int = 2):
    """Losses and final (params, method state) of `steps` train steps on one batch."""
    run = train.prepare(config, workdir, mesh=sharding.make_mesh(devices))
    state = run.init_state()
    step = train.make_train_step(run)
    batch = synthetic_batch(config)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, sharding.global_batch(batch, run.mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get((state.params, state.method_state))


def assert_sharded_step_matches(config, tmp_path) -> None:
    """Two steps on 8 devices give the losses and state of the same steps on 1 device."""
    losses_1, state_1 = run_steps(config, str(tmp_path / "one"), jax.devices()[:1])
    losses_8, state_8 = run_steps(config, str(tmp_path / "eight"), jax.devices()[:8])
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state_8), jax.tree.leaves(state_1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def logged_steps(workdir: str) -> list[int]:
    """Steps of the training lines in workdir/metrics.jsonl, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if '"loss"' in line]


END_TO_END_STEPS = 3  # `assert_trains_and_resumes`: preempted after step 2, resumed to 3


def end_to_end_config(path: str, npz: str, **overrides):
    """The config `assert_trains_and_resumes` runs for a recipe. A sharded-step check
    on it compiles the very train step the CLI runs, so the two share one compile."""
    return tiny_config(path, npz=npz, **{"train.steps": END_TO_END_STEPS, **overrides})


@contextlib.contextmanager
def preempted_after(steps: int):
    """Training stops with KeyboardInterrupt (as on a preemption signal) when it asks
    for batch `steps + 1`."""
    stream = pipeline.train_iterator

    def preempted(*args, **kwargs):
        batches = stream(*args, **kwargs)
        for _ in range(steps):
            yield next(batches)
        raise KeyboardInterrupt

    with mock.patch.object(pipeline, "train_iterator", preempted):
        yield


def assert_trains_and_resumes(path: str, npz: str, workdir: str, capsys) -> None:
    """`python -m sslx.main --config=PATH:runlocal` is preempted after step 2 of 3; the
    same command again resumes from the step-2 checkpoint, finishes and prints k-NN."""
    steps = {"train.steps": END_TO_END_STEPS}
    with preempted_after(2), pytest.raises(KeyboardInterrupt):
        run_cli(path, workdir, npz, **steps)
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
    assert logged_steps(workdir) == [1, 2]
    assert "k-NN" not in capsys.readouterr().out
    run_cli(path, workdir, npz, **steps)
    assert logged_steps(workdir) == [1, 2, 3]
    assert re.search(r"^k-NN top-1: [01]\.\d{4} \(k=5\)$", capsys.readouterr().out, re.M)
