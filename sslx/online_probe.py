"""The online linear probe: a linear classifier of the labels trained beside the
self-supervised network, on its stop-gradient features, with its own optimizer
(as solo-learn's `classifier` and the BYOL code's online classifier), so a run
shows what its features are worth while it trains.

`config.online_probe.num_classes > 0` turns it on. Each step, the train step
embeds the first view of its batch with the weights it starts from, in eval mode
(`Method.embed`: the features evaluation and export read, the EMA teacher's for
DINO and iBOT), stops their gradient, and takes one SGD step of the probe on the
labelled images of the batch. The probe's weights and momentum live in the train
state (`TrainState.probe`): they are checkpointed, sharded and resumed with the
rest, and the self-supervised loss never sees them. Its accuracy on the eval
split is the `online_probe` evaluator's.

Deviation from solo-learn: the features come from a second, eval-mode forward of
the first view, not from the training forward (its BatchNorm in train mode), so
the probe reads exactly what the evaluators read, at the cost of one more
forward of one view per step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslx.errors import ConfigError

PyTree = Any

DEFAULTS = dict(
    num_classes=0,      # classes of config.data.train_split's labels; 0: no probe
    lr=0.1,             # constant SGD learning rate (solo-learn's classifier_lr)
    momentum=0.9,
    weight_decay=0.0,   # solo-learn puts none on its classifier
)


def default_config() -> ml_collections.ConfigDict:
    """`config.online_probe`, off."""
    return ml_collections.ConfigDict(DEFAULTS)


class OnlineProbe:
    """A linear layer [feature_dim -> num_classes] and its SGD, as pure functions."""

    def __init__(self, config: ml_collections.ConfigDict, feature_dim: int):
        for field, low, high in (("lr", 0.0, None), ("momentum", None, 1.0),
                                 ("weight_decay", None, None)):
            value = config[field]
            ok = (isinstance(value, (int, float)) and value >= 0 and (low is None or value > low)
                  and (high is None or value < high))
            if not ok:
                bounds = {"lr": "> 0", "momentum": "in [0, 1)", "weight_decay": ">= 0"}[field]
                raise ConfigError(f"config.online_probe.{field}={value!r} must be {bounds}")
        self.num_classes = config.num_classes
        self.feature_dim = feature_dim
        self.optimizer = optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.sgd(config.lr, momentum=config.momentum or None))

    def init(self) -> PyTree:
        """`{'params': {'kernel', 'bias'}, 'opt_state'}`, the weights at zero (a convex
        problem: any start reaches the same probe)."""
        params = {"kernel": jnp.zeros((self.feature_dim, self.num_classes), jnp.float32),
                  "bias": jnp.zeros((self.num_classes,), jnp.float32)}
        return {"params": params, "opt_state": self.optimizer.init(params)}

    @staticmethod
    def logits(params: PyTree, features: jax.Array) -> jax.Array:
        return features.astype(jnp.float32) @ params["kernel"] + params["bias"]

    def update(self, probe: PyTree, features: jax.Array,
               labels: jax.Array) -> tuple[PyTree, dict[str, jax.Array]]:
        """One SGD step on the labelled rows (label >= 0) of `features` [B, D]; metrics
        `probe_loss` and `probe_top1` on those rows, before the step."""
        features = jax.lax.stop_gradient(features)
        labelled = labels >= 0
        count = jnp.maximum(jnp.sum(labelled), 1)

        def loss_fn(params: PyTree) -> tuple[jax.Array, jax.Array]:
            logits = self.logits(params, features)
            per_image = optax.softmax_cross_entropy_with_integer_labels(
                logits, jnp.where(labelled, labels, 0))
            loss = jnp.sum(jnp.where(labelled, per_image, 0.0)) / count
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(probe["params"])
        updates, opt_state = self.optimizer.update(grads, probe["opt_state"], probe["params"])
        correct = (jnp.argmax(logits, axis=-1) == labels) & labelled
        return ({"params": optax.apply_updates(probe["params"], updates), "opt_state": opt_state},
                {"probe_loss": loss, "probe_top1": jnp.sum(correct) / count})


def build(config: ml_collections.ConfigDict, feature_dim: int) -> OnlineProbe | None:
    """The run's probe, or None where `config.online_probe` is off or absent (a run
    saved before it existed)."""
    section = config.get("online_probe")
    if section is None or section.num_classes == 0:
        return None
    if not (isinstance(section.num_classes, int) and section.num_classes >= 2):
        raise ConfigError(f"config.online_probe.num_classes={section.num_classes!r} must be 0 "
                          "(no probe) or the number of classes of config.data.train_split (>= 2)")
    return OnlineProbe(section, feature_dim)
