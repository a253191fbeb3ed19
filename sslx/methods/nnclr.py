"""NNCLR (Dwibedi et al. 2021): contrastive learning whose positive for a view is
the nearest neighbour of its projection in a support set of past projections.

The support set is a FIFO queue of ℓ2-normalised projections of the first view,
held in the method state as a replicated [queue_size, D] array, the labels of
those rows (for the `nn_same_label` diagnostic only) and an int32 write
pointer. The step sees the global batch, so every step enqueues the whole global
batch: the queue holds the same rows on 1 or 8 devices or on many hosts.
Nearest neighbours are looked up before the current batch is enqueued. The queue
starts filled with random unit vectors (as the reference implementations do), so
the first steps' positives are noise until the queue has turned over once.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, PyTree
from sslx.methods.common import TwoViewMethod
from sslx.models import heads


def enqueue(queue: jax.Array, pointer: jax.Array,
            values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """FIFO write of values [B, ...] into queue [Q, ...] (B <= Q) from row `pointer`
    on, wrapping around the end; returns `(queue, (pointer + B) mod Q)`."""
    size, count = queue.shape[0], values.shape[0]
    rows = (pointer + jnp.arange(count)) % size
    values = jax.lax.stop_gradient(values).astype(queue.dtype)
    return queue.at[rows].set(values), (pointer + count) % size


# configs/nnclr_resnet50.py (Dwibedi et al. 2021, Sec. 3-4 and Appendix A).
DEFAULTS = dict(temperature=0.1, queue_size=98304, projector_hidden_dim=2048,
                projector_dim=256, predictor_hidden_dim=4096)


@register("nnclr", defaults=DEFAULTS)
class NNCLR(TwoViewMethod):
    """Config: `method.temperature`, `method.queue_size`, `method.projector_hidden_dim`,
    `method.projector_dim`, `method.predictor_hidden_dim`.

    Logged: `embedding_std` of the projections and `nn_same_label`, the fraction of
    first-view nearest neighbours whose stored label matches (a free diagnostic of
    how semantic the positives are; labels are never used by the loss)."""

    batch_level_loss = "contrasts each view with the other views of the batch (its negatives)"

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        if not cfg.temperature > 0:
            raise ConfigError(f"config.method.temperature={cfg.temperature} must be > 0")
        if cfg.queue_size < self.spec.batch_size:
            raise ConfigError(f"config.method.queue_size={cfg.queue_size} must be at least "
                              f"the global batch size {self.spec.batch_size}: each step "
                              "enqueues the whole batch")

    def heads(self) -> dict[str, nn.Module]:
        cfg = self.config
        return {
            "projector": heads.MLPHead(
                hidden_dim=cfg.projector_hidden_dim, out_dim=cfg.projector_dim, num_layers=3,
                output_norm=True, output_norm_scale=True, output_norm_bias=True,
                dtype=self.dtype),
            "predictor": heads.MLPHead(
                hidden_dim=cfg.predictor_hidden_dim, out_dim=cfg.projector_dim, num_layers=2,
                dtype=self.dtype),
        }

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        net_rng, queue_rng = jax.random.split(rng)
        params, state = super().init(net_rng, batch)
        shape = (self.config.queue_size, self.config.projector_dim)
        state["queue"] = heads.l2_normalize(jax.random.normal(queue_rng, shape, jnp.float32))
        state["queue_labels"] = jnp.full(shape[:1], -1, jnp.int32)
        state["queue_pointer"] = jnp.zeros((), jnp.int32)
        return params, state

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        outputs, batch_stats = self.forward_views(params, state, batch["views"], rng)
        (z_a, p_a), (z_b, p_b) = ((out["projection"], out["prediction"]) for out in outputs)
        queue, pointer = state["queue"], state["queue_pointer"]
        loss = losses.nnclr_loss(z_a, z_b, queue, self.config.temperature, p_a, p_b)
        # The same lookup as inside the loss: XLA computes it once (CSE).
        neighbours = losses.nearest_neighbour_index(z_a, queue)
        same_label = jnp.mean(state["queue_labels"][neighbours] == batch["label"])
        new_queue, new_pointer = enqueue(queue, pointer,
                                         heads.l2_normalize(z_a.astype(jnp.float32)))
        new_labels, _ = enqueue(state["queue_labels"], pointer, batch["label"])
        new_state = {"batch_stats": batch_stats, "queue": new_queue,
                     "queue_labels": new_labels, "queue_pointer": new_pointer}
        metrics = {"embedding_std": losses.embedding_std(z_a),
                   "nn_same_label": same_label.astype(jnp.float32)}
        return loss, (new_state, metrics)
