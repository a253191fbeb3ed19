"""The contract between an evaluator and the training loop.

An evaluator is built once per run from its section of `config.evals` and the
run (`sslx.train.Run`: config, mesh, method, workdir), before anything compiles,
so a bad setting or a missing split fails at once. The loop then calls
`evaluate(state)` at the evaluator's `every_steps` and at the end of training;
it returns `{metric: value}`, which the loop logs and writes as
`<name>_<metric>` with the training metrics. Every host calls it with the same
state (collectives inside stay in step); process 0 alone writes.
"""

from __future__ import annotations

import abc
from typing import Any

import ml_collections

from sslx.errors import ConfigError


class Evaluator(abc.ABC):
    """One evaluation of the train state.

    `name` is its key in `config.evals`; `config` its section there (`type`,
    `every_steps`, `enabled` and the fields its type registers, missing ones
    filled with their defaults); `run` the `train.Run` it evaluates."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        self.name = name
        self.config = config
        self.run = run

    def require_method(self, capability: str, who_has: str) -> None:
        """`ConfigError` unless the run's method has the optional capability (a method
        of `Method`'s subclasses, such as `classify`) this evaluator calls; `who_has`
        names the methods that do, for the message."""
        if not callable(getattr(self.run.method, capability, None)):
            where = f"config.evals.{self.name}"
            raise ConfigError(f"{where}: method {self.run.config.method.name!r} has no "
                              f"`{capability}` ({who_has} has): set {where}.enabled=False")

    def due(self, step: int) -> bool:
        """Whether the loop evaluates after `step` (the end of training aside):
        every `every_steps` steps; 0 or negative: only at the end."""
        return self.config.every_steps > 0 and step % self.config.every_steps == 0

    @abc.abstractmethod
    def evaluate(self, state: Any) -> dict[str, float]:
        """`{metric: value}` of the train state `state` (a `train.TrainState`); empty
        when there is nothing to report (the evaluator logs why)."""
