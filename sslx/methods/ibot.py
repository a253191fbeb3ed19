"""iBOT (Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online
Tokenizer", Sec. 3 and Appendix A): DINO's [CLS] self-distillation plus masked
patch self-distillation.

The student sees its global crops with blockwise-masked patches (masks made in
the tf.data pipeline, `sslx.data.masks`, one per global crop) and the local
crops unmasked; the teacher (EMA, as DINO) sees the unmasked global crops. One
head is shared by the [CLS] and the patch tokens (`shared_head=True`, the ViT
recipes of the paper). The loss is
    cls:   `losses.dino_loss` over pairs of different crops, center `center`;
    patch: `losses.ibot_patch_loss` between the teacher's and the student's
           tokens of the same global crop at its masked patches, center
           `patch_center`, teacher temperature `warmup_teacher_patch_temp` ->
           `teacher_patch_temp`;
weighted by `lambda_cls` and `lambda_patch` (1 and 1). Both centers are EMAs
over the global batch (the patch center also over the patches).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import dino, register
from sslx.methods.base import Batch, LossOutput, PyTree, init_variables
from sslx.methods.common import forward
from sslx.methods.dino import DINO


class TokenEncoder(nn.Module):
    """ViT backbone -> one head applied to the [CLS] token and to every patch token.

    Returns `{'features', 'projection'}` ([CLS]) and, with `tokens=True`,
    `'patch_projection'` [B, N, K]; `mask` [B, N] masks patches (True = masked)."""

    backbone: nn.Module
    projector: nn.Module

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None,
                 tokens: bool = True, features_only: bool = False) -> dict[str, jax.Array]:
        cls, patches = self.backbone(x, train=train, mask=mask, return_tokens=True)
        outputs = {"features": cls}
        if features_only:
            return outputs
        outputs["projection"] = self.projector(cls, train=train)
        if tokens:
            outputs["patch_projection"] = self.projector(patches, train=train)
        return outputs


# DINO's fields and iBOT's own; values of configs/ibot_vits16.py (Zhou et al. 2022,
# Appendix A and the README's ViT-S/16 run: K = 8192, last layer not normalised, loss
# weights 1 and 1, patch teacher temperature 0.04 -> 0.07 like the [CLS] one).
DEFAULTS = {**dino.DEFAULTS, "out_dim": 8192, "norm_last_layer": False, "lambda_cls": 1.0,
            "lambda_patch": 1.0, "warmup_teacher_patch_temp": 0.04,
            "teacher_patch_temp": 0.07}


@register("ibot", defaults=DEFAULTS)
class IBOT(DINO):
    """Config: DINO's fields plus `lambda_cls`, `lambda_patch`,
    `warmup_teacher_patch_temp`, `teacher_patch_temp`; `config.masks` (see
    `sslx.data.masks.mask_config`); a ViT backbone."""

    batch_level_loss = "centres the teacher's outputs by EMAs of their batch means, once per batch"
    mask_token = True
    inputs = ("views", "label", "masks")

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        if self.spec.masks is None:
            raise ConfigError("iBOT needs masked global crops: set config.masks = "
                              "sslx.data.masks.mask_config(...) in the recipe")
        if not self.model.name.startswith("vit"):
            raise ConfigError(f"config.model.name={self.model.name!r}: iBOT masks patch "
                              "tokens and needs a ViT backbone (vit_t, vit_s, vit_b)")
        for field in ("warmup_teacher_patch_temp", "teacher_patch_temp"):
            if not cfg[field] > 0:
                raise ConfigError(f"config.method.{field}={cfg[field]} must be > 0")

    def teacher_patch_temp(self, step: jax.Array | int) -> jax.Array:
        """Patch teacher temperature, warmed up over `warmup_teacher_temp_epochs`."""
        cfg = self.config
        return self.temperature_warmup(cfg.warmup_teacher_patch_temp,
                                       cfg.teacher_patch_temp)(step)

    def network(self, teacher: bool = False) -> TokenEncoder:
        return TokenEncoder(backbone=self.backbone(teacher), projector=self.head())

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        images = batch["views"][0]
        params, batch_stats = init_variables(self.network(), rng, images,
                                             mask=jnp.zeros(batch["masks"][0].shape, bool))
        return params, {
            "batch_stats": batch_stats,
            "teacher": self.target.init(params, batch_stats),
            "center": jnp.zeros([self.config.out_dim], jnp.float32),
            "patch_center": jnp.zeros([self.config.out_dim], jnp.float32),
        }

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        cfg = self.config
        n = self.n_global
        views, masks = batch["views"], batch["masks"]
        global_rng, local_rng = jax.random.split(rng)
        network = self.network()
        # All global crops share one shape, hence one call with the masks stacked alike.
        student, batch_stats = forward(network, params, state["batch_stats"], views[:n],
                                       train=True, rng=global_rng,
                                       mask=jnp.concatenate(masks, axis=0))
        if len(views) > n:
            local, batch_stats = forward(network, params, batch_stats, views[n:], train=True,
                                         rng=local_rng, tokens=False)
            student = student + local
        teacher, teacher_state = self.teacher_forward(state["teacher"], views[:n])

        teacher_cls = [out["projection"] for out in teacher]
        teacher_patch = [out["patch_projection"] for out in teacher]
        temp, patch_temp = self.teacher_temp(step), self.teacher_patch_temp(step)
        cls_loss = losses.dino_loss([out["projection"] for out in student], teacher_cls,
                                    state["center"], cfg.student_temp, temp)
        patch_loss = losses.ibot_patch_loss(
            [out["patch_projection"] for out in student[:n]], teacher_patch, masks,
            state["patch_center"], cfg.student_temp, patch_temp)
        loss = cfg.lambda_cls * cls_loss + cfg.lambda_patch * patch_loss
        new_state = {
            "batch_stats": batch_stats,
            "teacher": teacher_state,
            "center": losses.update_center(state["center"], teacher_cls, cfg.center_momentum),
            "patch_center": losses.update_center(state["patch_center"], teacher_patch,
                                                 cfg.center_momentum),
        }
        metrics = {"cls_loss": cls_loss, "patch_loss": patch_loss, "teacher_temp": temp,
                   "mask_ratio": jnp.mean(jnp.stack(masks).astype(jnp.float32))}
        return loss, (new_state, metrics)
