"""Supervised baseline and fine-tuning: cross-entropy on the labels.

The same backbones, pipeline, evaluators and checkpoints as the self-supervised
methods, so "self-supervised versus supervised" is one config switch; started
from a pretrained run (`config.init.checkpoint`) it is the fine-tuning protocol.

Label smoothing, mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) follow
timm's `Mixup` in its default batch mode, as the DeiT and MAE fine-tuning recipes
use it: one lambda ~ Beta(alpha, alpha) per batch, each image mixed with the
image at the mirrored position of the global batch (`x[::-1]`), CutMix instead of
mixup with probability 0.5 when both are on, and for CutMix lambda corrected to
the share of the image the box leaves. Targets are the smoothed one-hot labels
mixed with the same lambda. Unlabelled images (label -1) do not count in the loss.

`frozen_backbone=True` is the papers' linear protocol (MoCo's `main_lincls.py`, DINO's
`eval_linear.py`) as a training run: the backbone runs in inference mode (BatchNorm
normalises with its running statistics and keeps them, no drop-path) and its features
are cut from the gradient, so only the head learns and no backward pass runs through
the backbone. The backbone's params are also frozen in the optimizer for the whole
run (`frozen_params`), so weight decay, whatever its setting, cannot move them either:
params and statistics stay bit-identical to those the run started from
(`config.init.checkpoint`). Mixup and CutMix still mix the images the frozen backbone
sees, as for a fine-tuned one; the papers' protocol uses neither.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree
from sslx.methods.common import forward
from sslx.models import heads

# configs/supervised_resnet50.py (torchvision's ResNet-50 reference): no smoothing or mixing.
DEFAULTS = dict(
    num_classes=1000,
    label_smoothing=0.0,
    mixup_alpha=0.0,     # 0: no mixup
    cutmix_alpha=0.0,    # 0: no CutMix
    head_init="torch",   # the classifier's init, a key of inits.LINEAR_INITS
    frozen_backbone=False,  # True: the linear protocol, only the head learns (see above)
)
# timm's Mixup(switch_prob=0.5): CutMix rather than mixup for half the batches.
CUTMIX_PROB_WHEN_BOTH = 0.5


class Classifier(nn.Module):
    """backbone -> one Dense layer `head` to the class logits.

    Returns `{'features': h, 'logits': y}`; `features_only=True` stops after the
    backbone (what evaluation and export embed). With `frozen_backbone` the backbone
    always runs in inference mode and its features carry no gradient."""

    backbone: nn.Module
    num_classes: int
    head_init: str = "torch"
    frozen_backbone: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool,
                 features_only: bool = False) -> dict[str, jax.Array]:
        features = self.backbone(x, train=train and not self.frozen_backbone)
        if self.frozen_backbone:
            features = jax.lax.stop_gradient(features)
        outputs = {"features": features}
        if not features_only:
            outputs["logits"] = heads.MLPHead(
                hidden_dim=0, out_dim=self.num_classes, num_layers=1,
                linear_init=self.head_init, name="head")(outputs["features"], train=train)
        return outputs


def cutmix_mask(rng: jax.Array, lam: jax.Array, height: int, width: int) -> jax.Array:
    """float32 [H, W]: 1 inside a box of sides sqrt(1 - lam) x (H, W) centred on a
    uniform random pixel and clipped to the image (timm's `rand_bbox`), 0 elsewhere."""
    cut = jnp.sqrt(1.0 - lam)
    centre_y, centre_x = (jax.random.randint(key, (), 0, size)
                          for key, size in zip(jax.random.split(rng), (height, width),
                                               strict=True))
    half_h = (cut * height).astype(jnp.int32) // 2
    half_w = (cut * width).astype(jnp.int32) // 2
    ys = jnp.arange(height)[:, None]
    xs = jnp.arange(width)[None, :]
    inside = ((ys >= jnp.clip(centre_y - half_h, 0, height)) &
              (ys < jnp.clip(centre_y + half_h, 0, height)) &
              (xs >= jnp.clip(centre_x - half_w, 0, width)) &
              (xs < jnp.clip(centre_x + half_w, 0, width)))
    return inside.astype(jnp.float32)


def mix_batch(images: jax.Array, targets: jax.Array, rng: jax.Array, *, mixup_alpha: float,
              cutmix_alpha: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(images, targets, lam)` after mixup or CutMix with the mirrored batch (see the
    module docstring); unchanged, lam 1, where both alphas are 0."""
    if not (mixup_alpha > 0 or cutmix_alpha > 0):
        return images, targets, jnp.ones((), jnp.float32)
    coin_rng, mixup_rng, cutmix_rng, box_rng = jax.random.split(rng, 4)
    mirrored = images[::-1]
    height, width = images.shape[1:3]
    candidates = []
    if mixup_alpha > 0:
        lam = jax.random.beta(mixup_rng, mixup_alpha, mixup_alpha)
        candidates.append((lam * images + (1 - lam) * mirrored, lam))
    if cutmix_alpha > 0:
        lam = jax.random.beta(cutmix_rng, cutmix_alpha, cutmix_alpha)
        box = cutmix_mask(box_rng, lam, height, width)[None, :, :, None]
        candidates.append((box * mirrored + (1 - box) * images,
                           1.0 - jnp.mean(box)))  # the share the box leaves
    mixed, lam = candidates[0]
    if len(candidates) == 2:
        use_cutmix = jax.random.uniform(coin_rng) < CUTMIX_PROB_WHEN_BOTH
        mixed = jnp.where(use_cutmix, candidates[1][0], mixed)
        lam = jnp.where(use_cutmix, candidates[1][1], lam)
    return mixed.astype(images.dtype), lam * targets + (1 - lam) * targets[::-1], lam


@register("supervised", defaults=DEFAULTS)
class Supervised(Method):
    """Config: `method.num_classes`, `method.label_smoothing`, `method.mixup_alpha`,
    `method.cutmix_alpha`, `method.head_init`, `method.frozen_backbone`. One view
    (`config.views` with one crop). Metrics: `top1` on the training batch (a mixed
    image counts as the image it was mixed into), `labelled` (the share of the batch
    that counts) and, when mixing, `mix_lambda`. Evaluation embeds the backbone's
    features, like every method."""

    batch_level_loss = None  # cross-entropy per labelled image; mixup pairs in a microbatch
    needs_labels = True

    def check_config(self) -> None:
        self.require_views(1)
        cfg = self.config
        if not (isinstance(cfg.num_classes, int) and cfg.num_classes >= 2):
            raise ConfigError(f"config.method.num_classes={cfg.num_classes!r} must be an "
                              "integer >= 2 (the classes of config.data.train_split)")
        if not 0 <= cfg.label_smoothing < 1:
            raise ConfigError(f"config.method.label_smoothing={cfg.label_smoothing} must be "
                              "in [0, 1)")
        for field in ("mixup_alpha", "cutmix_alpha"):
            if not cfg[field] >= 0:
                raise ConfigError(f"config.method.{field}={cfg[field]} must be >= 0 (0: off)")
        if not isinstance(cfg.frozen_backbone, bool):
            raise ConfigError(f"config.method.frozen_backbone={cfg.frozen_backbone!r} must be "
                              "True (the linear protocol) or False")
        if cfg.frozen_backbone and self.model.drop_path:
            raise ConfigError(
                f"config.method.frozen_backbone=True runs the backbone in inference mode, "
                f"which drops no path, but config.model.drop_path={self.model.drop_path}: "
                "set config.model.drop_path=0 for the linear protocol, or "
                "config.method.frozen_backbone=False to fine-tune with drop-path")

    def network(self) -> nn.Module:
        return Classifier(self.backbone(), self.config.num_classes, self.config.head_init,
                          self.config.frozen_backbone)

    def frozen_params(self) -> tuple[str, ...]:
        """The whole backbone with `frozen_backbone`: the optimizer never moves it."""
        return ("^backbone/",) if self.config.frozen_backbone else ()

    def classify(self, params: PyTree, state: PyTree, images: jax.Array) -> jax.Array:
        """The class logits [N, num_classes] of images [N, H, W, 3], in eval mode (the
        `classifier` evaluator's test accuracy)."""
        return self.network().apply({"params": params, "batch_stats": state["batch_stats"]},
                                    images, train=False)["logits"]

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        cfg = self.config
        images, labels = batch["views"][0], batch["label"]
        labelled = labels >= 0
        targets = optax.smooth_labels(jax.nn.one_hot(labels, cfg.num_classes),
                                      cfg.label_smoothing)
        mix_rng, forward_rng = jax.random.split(rng)
        images, targets, lam = mix_batch(images, targets, mix_rng,
                                         mixup_alpha=cfg.mixup_alpha,
                                         cutmix_alpha=cfg.cutmix_alpha)
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
            labelled = labelled & labelled[::-1]  # both images of a mix need a label
        (outputs,), batch_stats = forward(self.network(), params, state["batch_stats"],
                                          [images], train=True, rng=forward_rng)
        per_image = optax.softmax_cross_entropy(outputs["logits"].astype(jnp.float32),
                                                targets)
        count = jnp.maximum(jnp.sum(labelled), 1)
        loss = jnp.sum(jnp.where(labelled, per_image, 0.0)) / count
        correct = (jnp.argmax(outputs["logits"], axis=-1) == labels) & labelled
        metrics = {"top1": jnp.sum(correct) / count, "labelled": jnp.mean(labelled)}
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
            metrics["mix_lambda"] = lam
        return loss, ({"batch_stats": batch_stats}, metrics)
