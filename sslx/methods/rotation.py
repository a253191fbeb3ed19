"""RotNet (Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting
Image Rotations"): a classifier of which of four rotations (0, 90, 180, 270 degrees)
an image went through.

The input pipeline makes each image's four rotations and their labels (the
"rotation" producer, `sslx.data.pretext`); all four are in the batch, as in the
official code, so every image is seen upright and rotated in the same step and the
BatchNorm statistics span all 4B of them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree
from sslx.methods.common import classification_loss, forward
from sslx.methods.supervised import Classifier

# The official code is PyTorch: its classifier starts as torch's default Linear.
DEFAULTS = dict(head_init="torch")


@register("rotation", defaults=DEFAULTS)
class Rotation(Method):
    """Config: `method.head_init`. One crop (`config.views` with one crop); the batch
    holds its 4 rotations. Loss: softmax cross-entropy of the 4-way linear `head` over
    all 4B rotated images; metric `top1`.

    Evaluation embeds the backbone's pooled features, as the base does, not the
    head's logits: the head only knows the four rotations, and the paper's probes
    also read the backbone (its later layers, not the classifier)."""

    batch_level_loss = None  # cross-entropy per rotated image
    inputs = ("rotation",)

    def check_config(self) -> None:
        self.require_views(1)

    def network(self) -> nn.Module:
        return Classifier(self.backbone(), num_classes=4, head_init=self.config.head_init)

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        images = jnp.concatenate(batch["views"], axis=0)
        labels = jnp.concatenate(batch["rotation"], axis=0)
        (outputs,), batch_stats = forward(self.network(), params, state["batch_stats"],
                                          [images], train=True, rng=rng)
        loss, top1 = classification_loss(outputs["logits"], labels)
        return loss, ({"batch_stats": batch_stats}, {"top1": top1})
