"""The one training loop, method-agnostic, and the offline evaluation of its checkpoints.

Sections, in order: run setup (mesh, lengths, method, optimizer, checkpoints),
input (started early), state shapes via `jax.eval_shape`, shardings, init born
sharded or restored from the workdir, one donated jitted step, the loop (metrics,
NaN guard, checkpoints, the evaluators of `config.evals` at their steps), then
every evaluator once more and the eval split's embeddings. A run starting fresh
may take another run's weights (`config.init`) before its first step.
Methods plug in through `sslx.methods.base.Method`; nothing here names one.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sslx import (
    checkpoint,
    config_checks,
    evaluators,
    fs,
    methods,
    models,
    online_probe,
    optim,
    saved_config,
    sharding,
)
from sslx.checkpoint import Checkpointer, checkpoint_directory, describe
from sslx.data import pipeline
from sslx.data.device_augment import finish_batch
from sslx.data.spec import InputSpec, input_spec
from sslx.errors import CheckpointError, ConfigError, DataError
from sslx.evaluators import Evaluator
from sslx.evaluators import embed as embedding
from sslx.evaluators.export import export_split
from sslx.methods.base import Method, TrainLength
from sslx.metrics import MetricWriter, Progress, Throughput
from sslx.online_probe import OnlineProbe
from sslx.preemption import PreemptionNotice

log = logging.getLogger("sslx")

# Batch size of the example batch `Method.init` sees: only shapes matter there.
_INIT_BATCH = 2
# The length given to a run that only embeds (export, `sslx.load`): the train
# state's shapes do not depend on the run's length, so restoring it needs no
# training data to count. Long enough for every recipe's warmup to fit.
EMBED_ONLY = TrainLength(total_steps=10**6, steps_per_epoch=1)


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs, as one pytree."""

    step: jax.Array
    params: Any
    opt_state: Any
    method_state: Any
    rng: jax.Array
    # The online linear probe's weights and optimizer state (`sslx.online_probe`);
    # None where the run has none.
    probe: Any = None

    def saved_tree(self) -> dict[str, Any]:
        """The state as a checkpoint holds it: a dict of its fields, those that are None
        left out, so a run without a probe saves and restores the tree that runs
        saved before the probe existed."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if getattr(self, field.name) is not None}


@dataclasses.dataclass
class Run:
    """The pieces of a run that training, evaluation and export share."""

    config: ml_collections.ConfigDict
    workdir: str
    mesh: jax.sharding.Mesh
    length: TrainLength
    spec: InputSpec  # the views and masks of config, parsed once
    method: Method
    optimizer: optax.GradientTransformation
    probe: OnlineProbe | None  # the online linear probe, where config.online_probe has one
    lr_schedule: Any
    checkpointer: Checkpointer
    abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
    # Embedded splits of the latest evaluated step, {(step, split): (features, labels)}
    # (`sslx.evaluators.embed.split_features`).
    features: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The inputs of a training batch: the method's, and the labels for the probe."""
        inputs = tuple(self.method.inputs)
        return (*inputs, "label") if self.probe and "label" not in inputs else inputs

    def init_state(self) -> TrainState:
        """A fresh state, born sharded (no host-side copy of the parameters)."""
        shardings = jax.tree.map(lambda s: s.sharding, self.abstract_state)
        return jax.jit(self._init, out_shardings=shardings)()

    def restore_state(self) -> TrainState:
        saved = self.checkpointer.restore(self.abstract_state.saved_tree(),
                                          describe(self.config))
        return TrainState(**saved)

    def initial_state(self, source: InitSource | None = None) -> TrainState:
        """The state a run starting fresh begins from: `init_state()`, then, where
        `config.init.checkpoint` names another run, that run's weights that fit
        (`source`, by default `open_init_source(self)`)."""
        source = source or open_init_source(self)
        if source is None:
            return self.init_state()
        try:
            state = self.init_state()
            values = source.saved.read([leaf.path for leaf in source.plan.taken.values()])
        finally:
            source.saved.close()
        values = {path: values[leaf.path] for path, leaf in source.plan.taken.items()}
        return checkpoint.overlay(state, self.abstract_state, values)

    def _init(self) -> TrainState:
        return _fresh_state(self.config, self.spec, self.method, self.optimizer, self.probe)


def _fresh_state(config: ml_collections.ConfigDict, spec: InputSpec, method: Method,
                 optimizer: optax.GradientTransformation,
                 probe: OnlineProbe | None) -> TrainState:
    """The state at step 0, from the method's init on an example batch of its inputs."""
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    example = pipeline.example_batch(spec, _INIT_BATCH, inputs=method.inputs)
    batch = finish_batch(jax.tree.map(jnp.asarray, example), init_rng, spec)
    params, method_state = method.init(init_rng, batch)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), method_state=method_state,
                      rng=train_rng, probe=probe.init() if probe else None)


def prepare(config: ml_collections.ConfigDict, workdir: str,
            mesh: jax.sharding.Mesh | None = None, *,
            length: TrainLength | None = None) -> Run:
    """Checks the config and builds everything but the arrays; compiles nothing.
    `mesh` defaults to all devices of all hosts; `length` to the one the train
    split gives (pass `EMBED_ONLY` to restore a state without training data)."""
    mesh = mesh or sharding.make_mesh(axes=config.get("mesh", sharding.DEFAULT_MESH))
    config_checks.check_run(config, num_devices=mesh.size, process_count=jax.process_count())
    spec = input_spec(config)
    length = length or _train_length(config)
    method = methods.build(config, length, spec)
    method.check_config()
    if spec.augment_on == "device" and "views" not in method.inputs:
        raise ConfigError(f"config.data.augment_on='device' augments the 'views' input, which "
                          f"{config.method.name} does not read (it reads "
                          f"{', '.join(method.inputs)}): set config.data.augment_on='host'")
    optimizer, lr_schedule = optim.build_optimizer(
        config.optim, global_batch_size=config.train.batch_size,
        total_steps=length.total_steps, steps_per_epoch=length.steps_per_epoch,
        frozen_for_run=method.frozen_params())
    probe = online_probe.build(config, models.feature_dim(config.model))
    shapes = jax.eval_shape(functools.partial(_fresh_state, config, spec, method, optimizer,
                                              probe))
    shardings = sharding.state_shardings(shapes, mesh, config.train.param_sharding,
                                         **sharding.placement_options(config.train))
    abstract_state = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    checkpointer = Checkpointer(checkpoint_directory(config, workdir),
                                config.checkpoint.every_steps, config.checkpoint.keep)
    return Run(config=config, workdir=workdir, mesh=mesh, length=length, spec=spec,
               method=method, optimizer=optimizer, probe=probe, lr_schedule=lr_schedule,
               checkpointer=checkpointer, abstract_state=abstract_state)


def _train_length(config: ml_collections.ConfigDict) -> TrainLength:
    steps_per_epoch = pipeline.steps_per_epoch(config)
    total_steps = (config.train.steps if config.train.steps > 0
                   else max(1, math.ceil(config.train.epochs * steps_per_epoch)))
    return TrainLength(total_steps=total_steps, steps_per_epoch=steps_per_epoch)


def make_train_step(run: Run):
    """The jitted, donated update: loss and gradients over the global batch,
    optimizer update, then the method's post-update (EMA teachers); the online
    probe's step on the features of the weights the step started from.

    With `config.train.accumulation_steps` k > 1 the loss, metrics and gradients
    are means over k microbatches of the batch (`accumulated_value_and_grad`),
    followed by the one update; k = 1 differentiates the whole batch at once."""
    method, optimizer, probe = run.method, run.optimizer, run.probe
    state_shardings = jax.tree.map(lambda s: s.sharding, run.abstract_state)
    steps = run.config.train.get("accumulation_steps", 1)
    grad_fn = (jax.value_and_grad(method.loss, has_aux=True) if steps == 1
               else accumulated_value_and_grad(run, steps))

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        batch = finish_batch(batch, rng, run.spec)
        (loss, (method_state, metrics)), grads = grad_fn(
            state.params, state.method_state, batch, rng, state.step)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = method.project(optax.apply_updates(state.params, updates))
        method_state = method.after_update(params, method_state, state.step)
        metrics = {**metrics, "loss": loss, "lr": run.lr_schedule(state.step),
                   "grad_norm": optax.global_norm(grads)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  method_state=method_state)
        if probe:
            features = method.embed(state.params, state.method_state, batch["views"][0])
            probe_state, probe_metrics = probe.update(state.probe, features, batch["label"])
            new_state = new_state.replace(probe=probe_state)
            metrics.update(probe_metrics)
        return new_state, metrics

    return jax.jit(
        train_step,
        in_shardings=(state_shardings, sharding.data_sharding(run.mesh)),
        out_shardings=(state_shardings, sharding.replicated(run.mesh)),
        donate_argnums=(0,),
    )


def accumulated_value_and_grad(run: Run, steps: int) -> Callable[..., Any]:
    """`jax.value_and_grad(method.loss, has_aux=True)` of the global batch as the mean
    over `steps` microbatches, for batches whose activations do not fit at once.

    The mean of the microbatches' gradients is the batch's only where the loss is a
    mean of independent per-example terms; `sslx.config_checks` refuses the other
    methods and backbones (`Method.batch_level_loss`) and the batches that do not
    split, and a method state holding BatchNorm statistics is refused here. Inside
    the jitted step the batch is split without moving data between devices:
    microbatch i takes every `steps`-th row of each device's share, from its i-th
    (`_microbatches`). A `jax.lax.scan` runs them one after the other, threading the
    method state through its carry and summing loss, metrics and gradients; the
    means follow. Microbatch i gets `jax.random.fold_in(rng, i)`, so a method that
    draws randomness per example (masks, mixup, drop-path) sees other draws than
    without accumulation: the same distribution, not the same numbers."""
    method, mesh = run.method, run.mesh
    stats = run.abstract_state.method_state
    if isinstance(stats, dict) and jax.tree.leaves(stats.get("batch_stats", {})):
        raise ConfigError(
            f"config.train.accumulation_steps={steps}: method {run.config.method.name!r} "
            "keeps BatchNorm statistics, whose normalisation over the batch would differ "
            "per microbatch, so accumulating microbatches would change its objective; use "
            "accumulation_steps=1 (or a larger slice)")
    value_and_grad = jax.value_and_grad(method.loss, has_aux=True)

    def accumulated(params: Any, method_state: Any, batch: dict, rng: jax.Array,
                    step: jax.Array) -> tuple[tuple[jax.Array, tuple[Any, dict]], Any]:
        microbatches = _microbatches(batch, steps, mesh)

        def one(carry: tuple[Any, Any], xs: tuple[jax.Array, dict]) -> tuple[Any, None]:
            method_state, total = carry
            index, microbatch = xs
            microbatch = jax.lax.with_sharding_constraint(microbatch,
                                                          sharding.data_sharding(mesh))
            (loss, (method_state, metrics)), grads = value_and_grad(
                params, method_state, microbatch, jax.random.fold_in(rng, index), step)
            total = jax.tree.map(lambda t, x: t + x.astype(t.dtype), total,
                                 (loss, metrics, grads))
            return (method_state, total), None

        first = jax.tree.map(lambda x: x[0], microbatches)
        (loss, (_, metrics)), grads = jax.eval_shape(value_and_grad, params, method_state,
                                                     first, rng, step)
        zeros = (_zeros(loss, promote=True), _zeros(metrics, promote=True), _zeros(grads))
        (method_state, total), _ = jax.lax.scan(
            one, (method_state, zeros), (jnp.arange(steps), microbatches))
        loss, metrics, grads = jax.tree.map(lambda t: t / steps, total)
        return (loss, (method_state, metrics)), grads

    return accumulated


def _microbatches(batch: dict, steps: int, mesh: jax.sharding.Mesh) -> dict:
    """Every leaf [B, ...] of the batch (split over the batch axes on dim 0) as
    [steps, B / steps, ...]: reshaped to [B / steps, steps, ...], whose dim 0 splits
    over the devices as the batch's did (each device's rows stay on it), then the two
    axes swapped, so that scanning over dim 0 gives microbatches split like the batch.
    The shardings are pinned, so the compiler moves no rows between devices."""
    spec = sharding.data_sharding(mesh).spec  # the batch axes, on dim 0

    def split(leaf: jax.Array) -> jax.Array:
        rows = leaf.reshape(leaf.shape[0] // steps, steps, *leaf.shape[1:])
        rows = jax.lax.with_sharding_constraint(rows, jax.sharding.NamedSharding(mesh, spec))
        stacked = jnp.swapaxes(rows, 0, 1)
        return jax.lax.with_sharding_constraint(
            stacked, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *spec)))

    return jax.tree.map(split, batch)


def _zeros(shapes: Any, *, promote: bool = False) -> Any:
    """Zeros of a pytree of `jax.ShapeDtypeStruct`s, to sum into; with `promote`, in at
    least float32, so boolean or integer metrics and bfloat16 losses average exactly."""
    def zeros(s: jax.ShapeDtypeStruct) -> jax.Array:
        dtype = jnp.promote_types(s.dtype, jnp.float32) if promote else s.dtype
        return jnp.zeros(s.shape, dtype)

    return jax.tree.map(zeros, shapes)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from `workdir` when it holds a checkpoint), then evaluates
    and exports embeddings. Returns the final figures and the written paths."""
    run = prepare(config, workdir)
    evals = build_evaluators(run)
    start_step = run.checkpointer.latest_step() or 0
    init_source = None if start_step else open_init_source(run)
    saved_config.save(config, workdir, write=jax.process_index() == 0)
    total_steps = run.length.total_steps
    batches = pipeline.train_iterator(config, run.spec, inputs=run.inputs,
                                      start_step=start_step)
    if start_step:
        log.info("resuming from step %d in %s", start_step, run.checkpointer.directory)
        state = run.restore_state()
    else:
        state = run.initial_state(init_source)
    train_step = make_train_step(run)
    description = describe(config)
    writer = MetricWriter(workdir)
    throughput = Throughput(config.train.batch_size)
    progress = Progress(total_steps, run.length.steps_per_epoch, start_step)
    with PreemptionNotice() as notice:
        try:
            for step in range(start_step + 1, total_steps + 1):
                waiting = time.perf_counter()
                batch = next(batches)
                throughput.waited(time.perf_counter() - waiting)
                if step == start_step + 1:
                    _check_labelled(run, batch)
                with jax.set_mesh(run.mesh):  # models pin activations to the batch split
                    state, metrics = train_step(state, sharding.global_batch(batch, run.mesh))
                if step == start_step + 1:
                    jax.block_until_ready(state)
                    throughput.start(step)
                    progress.started(step)
                progress.step(step)
                preempted = notice.reached(step)
                last = step == total_steps or preempted
                log_due = step % config.train.log_every == 0 or last
                if log_due or last or run.checkpointer.due(step):
                    # A non-finite state is never logged as good nor saved.
                    values = jax.device_get(metrics)
                    _check_finite(values, step)
                    if log_due:
                        progress.log(step, writer.write(
                            step, {**values, **throughput.measure(step)}))
                run.checkpointer.save(step, state.saved_tree(), description, force=last)
                if preempted:
                    return _stop_preempted(run, step)
                due = {name: e for name, e in evals.items()
                       if step < total_steps and e.due(step)}
                if due:
                    _evaluate(due, state, step, writer)
                    throughput.start(step)  # images/s leaves the evaluation out
        finally:  # also when interrupted: saves in flight complete, logs are flushed
            run.checkpointer.wait()
            progress.close()
            writer.close()
    results: dict[str, Any] = {"step": int(state.step)}
    results.update(_evaluate_at_end(run, evals, state))
    run.checkpointer.close()
    return results


def export(config: ml_collections.ConfigDict, workdir: str, split: str) -> dict[str, Any]:
    """Embeddings of `split` from the latest checkpoint in `workdir`, as .npy shard
    files and an index (`sslx.evaluators.export`), each host writing its own shard.
    Needs only `split` of `config.data`: the training data may be absent."""
    run = prepare(config, workdir, length=EMBED_ONLY)
    embedding.check_split(config, split, "--split")
    state = run.restore_state()
    paths = _write(run, state, split)
    run.checkpointer.close()
    return {"step": int(state.step), "embeddings": paths}


EVALS_FILE = "evals.json"


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             selected: Sequence[str] | None = None) -> dict[str, Any]:
    """The evaluators `selected` (names in `config.evals`; by default its enabled
    ones) on the latest checkpoint in `workdir`. Their metrics, `{name: {metric:
    value}}`, and each one's seconds are returned and written to
    `WORKDIR/evals.json` (merged with the figures already there for the same step)."""
    run = prepare(config, workdir, length=EMBED_ONLY)
    try:
        evals = (evaluators.build_all(run) if selected is None
                 else evaluators.build_named(run, selected))
        state = run.restore_state()
        step = int(state.step)
        metrics: dict[str, dict[str, float]] = {}
        seconds: dict[str, float] = {}
        for name, evaluator in evals.items():
            start = time.perf_counter()
            metrics[name] = evaluator.evaluate(state)
            seconds[name] = round(time.perf_counter() - start, 1)
            log.info("%s: %.1f s", name, seconds[name])
    finally:
        run.checkpointer.close()
    path = fs.join(workdir, EVALS_FILE)
    if jax.process_index() == 0:
        saved = fs.read_json(path) if fs.exists(path) else {}
        if saved.get("step") != step:
            saved = {}
        fs.write_json(path, {"step": step,
                             "metrics": {**saved.get("metrics", {}), **metrics},
                             "seconds": {**saved.get("seconds", {}), **seconds}})
    return {"step": step, "evals": metrics, "evals_file": path}


# Initialisation from another run's weights (config.init).


@dataclasses.dataclass
class InitSource:
    """The checkpoint `config.init.checkpoint` names, opened, and which of its
    leaves fill this run's state."""

    saved: checkpoint.SavedRun
    plan: checkpoint.InitPlan


def open_init_source(run: Run) -> InitSource | None:
    """`config.init.checkpoint`, checked against this run's state shapes (no array is
    read, nothing compiles); None where it is ''. `CheckpointError` naming the path
    when it holds no checkpoint or nothing of it fits this run."""
    init = run.config.init
    if not init.checkpoint:
        return None
    saved = checkpoint.SavedRun(init.checkpoint)
    try:
        backbone = _saved_backbone(run, saved) if init.parts == "backbone" else None
        plan = checkpoint.plan_init(run.abstract_state, saved.leaves, init.parts, backbone)
        where = f"{saved.directory} step {saved.step}"
        if not plan.taken:
            raise CheckpointError(
                f"config.init.checkpoint={init.checkpoint!r} ({where}) shares no "
                f"{'backbone ' if init.parts == 'backbone' else ''}weights with this run: "
                f"{'; '.join(plan.not_taken[:3]) or 'nothing to compare'}; start from a run "
                "of the same backbone (config.model)")
    except BaseException:
        saved.close()
        raise
    log.info("init from %s (parts=%s): %d of %d leaves taken%s", where, init.parts,
             len(plan.taken), plan.considered,
             f"; not taken: {', '.join(plan.not_taken)}" if plan.not_taken else "")
    return InitSource(saved, plan)


def _saved_backbone(run: Run, saved: checkpoint.SavedRun) -> dict[str, Any]:
    """`{'params', 'batch_stats'}` (of `checkpoint.Leaf`s) of the backbone the saved
    run embeds with, as its method's `backbone_variables` names it."""
    name = saved.description.get("method", {}).get("name", "")
    other = copy.deepcopy(run.config)
    try:
        other.method = methods.default_config(name)
        method = methods.build(other, run.length)
        leaves = _Subtrees(saved.leaves)  # a part the saved state lacks reads as empty
        return _plain(method.backbone_variables(leaves["params"], leaves["method_state"]))
    except (ConfigError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"config.init.checkpoint={run.config.init.checkpoint!r}: no backbone found in "
            f"its checkpoint (method {name!r}: {error}); use config.init.parts=all") from error


class _Subtrees(dict):
    """A nested dict in which a missing key is an empty subtree."""

    def __init__(self, tree: dict):
        super().__init__({k: _Subtrees(v) if isinstance(v, dict) else v for k, v in tree.items()})

    def __missing__(self, key: str) -> _Subtrees:
        return _Subtrees({})


def _plain(tree: Any) -> Any:
    return {k: _plain(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


# Evaluation: the evaluators of config.evals, and the eval split's embeddings.


def build_evaluators(run: Run) -> dict[str, Evaluator]:
    """The enabled evaluators of `config.evals`, after a check that the eval split
    they and the end-of-training export read exists (its error names every switch
    that stops a read); compiles nothing."""
    config = run.config
    readers = ["--config.eval.export_at_end=False"] if config.eval.export_at_end else []
    readers += [f"--config.evals.{name}.enabled=False" for name in sorted(config.evals.keys())
                if config.evals[name].get("enabled", True)]
    if readers:
        embedding.check_split(config, config.data.eval_split, "config.data.eval_split",
                              f"turn off what reads it: {', '.join(readers)}")
    return evaluators.build_all(run)


def _evaluate(evals: dict[str, Evaluator], state: TrainState, step: int,
              writer: MetricWriter) -> dict[str, float]:
    """Runs `evals` on `state`; their metrics, as `<name>_<metric>`, are logged and
    written with the training metrics of `step`."""
    results: dict[str, float] = {}
    for name, evaluator in evals.items():
        values = {f"{name}_{metric}": value
                  for metric, value in evaluator.evaluate(state).items()}
        if values:
            results.update(writer.write(step, values))
            log.info("step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in values.items()))
    return results


def _evaluate_at_end(run: Run, evals: dict[str, Evaluator],
                     state: TrainState) -> dict[str, Any]:
    """Every evaluator once more, then the eval split's embeddings
    (`config.eval.export_at_end`)."""
    config, step = run.config, int(state.step)
    writer = MetricWriter(run.workdir)
    try:
        results: dict[str, Any] = _evaluate(evals, state, step, writer)
    finally:
        writer.close()
    if config.eval.export_at_end:
        results["embeddings"] = _write(run, state, config.data.eval_split)
    return results


def _write(run: Run, state: TrainState, split: str) -> dict[str, str]:
    """`split` embedded by `state` into WORKDIR/embeddings/<split>/, streamed shard by
    shard from every host; `{'index': path}` on process 0, `{}` elsewhere."""
    return export_split(run.method, state.params, state.method_state, run.config, split,
                        run.mesh, fs.join(run.workdir, "embeddings"), int(state.step))


def _stop_preempted(run: Run, step: int) -> dict[str, Any]:
    """Waits for the checkpoint of `step` to commit and says so: the run ends here
    (exit status 0) and the same command resumes it."""
    start = time.perf_counter()
    run.checkpointer.wait()
    run.checkpointer.close()
    log.warning("preempted: the checkpoint of step %d is saved in %s (%.1f s); re-run "
                "the same command to resume", step, run.checkpointer.directory,
                time.perf_counter() - start)
    return {"step": step, "preempted": True}


def _check_labelled(run: Run, batch: dict) -> None:
    """`DataError` when the method learns from labels and the first batch has an
    unlabelled image (checked before the train step compiles)."""
    if run.method.needs_labels and (np.asarray(batch["label"]) < 0).any():
        raise DataError(
            f"method {run.config.method.name!r} learns from labels, but split "
            f"{run.config.data.train_split!r} has unlabelled images; set "
            "config.data.train_split to a labelled split")


def _check_finite(metrics: dict, step: int) -> None:
    bad = [name for name, value in metrics.items() if not np.all(np.isfinite(value))]
    if bad:
        raise FloatingPointError(
            f"{', '.join(bad)} became non-finite at step {step}; the last good checkpoint "
            "is kept in the workdir. Lower config.optim.base_lr, raise "
            "config.optim.warmup_epochs, or set config.optim.grad_clip")
