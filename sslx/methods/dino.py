"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers", Sec. 3 and Appendix A): self-distillation with no labels.

The student (backbone + `DINOHead`) sees every crop; the teacher, an EMA of the
student (momentum 0.996 -> 1 along a half cosine), sees the global crops
(`views[:n_global]`, the largest view group). The loss is the cross-entropy
between the teacher's centred, sharpened softmax and the student's softmax over
all pairs of different crops (`losses.dino_loss`). The center is an EMA
(momentum 0.9) of the mean teacher output over the global batch, held in the
method state, so it is the same on any number of devices and hosts.

Choices where the reference code leaves room:
- The teacher runs in train mode, as in the official code (it never calls
  `teacher.eval()`): a ResNet teacher normalises with the batch statistics of
  the global crops over the global batch and keeps its own running averages
  (those, not the student's, serve evaluation). It has no drop-path.
- The teacher temperature warms up once per epoch, as `teacher_temp_schedule[epoch]`
  does (`teacher_temp_per_epoch`); `False` makes it a per-step ramp, for runs
  shorter than the warm-up's first epoch (`:runlocal`).
- Evaluation and export embed with the teacher's backbone, as DINO reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree
from sslx.methods.common import Encoder, forward
from sslx.methods.teacher import EMATarget
from sslx.models import build_backbone, heads
from sslx.schedules import per_epoch_linspace, warmup_constant

# Param trees of the student that the teacher averages.
TEACHER_PARTS = ("backbone", "projector")


# Appendix A / `main_dino.py`: head 2048-2048-256 (GELU, no BN) then K = 65536 with a
# weight-normalised last layer, student temperature 0.1, teacher 0.04 -> 0.07 over 30
# epochs, teacher momentum 0.996 -> 1, center momentum 0.9 (configs/dino_vitb.py).
DEFAULTS = dict(
    out_dim=65536,
    hidden_dim=2048,
    bottleneck_dim=256,
    use_bn_in_head=False,
    norm_last_layer=True,
    student_temp=0.1,
    warmup_teacher_temp=0.04,
    teacher_temp=0.07,
    warmup_teacher_temp_epochs=30.0,
    teacher_temp_per_epoch=True,
    momentum_teacher=0.996,
    center_momentum=0.9,
)


@register("dino", defaults=DEFAULTS)
class DINO(Method):
    """Config: the `DEFAULTS` fields; `config.optim.frozen.last_layer = 1.0`
    keeps the head's last layer fixed during the first epoch."""

    batch_level_loss = "centres the teacher's outputs by an EMA of their batch mean, once per batch"
    mask_token = False  # iBOT's student needs one

    def check_config(self) -> None:
        cfg = self.config
        if self.spec.num_views < 2:
            raise ConfigError(f"{cfg.name} needs at least 2 crops; config.views has "
                              f"{self.spec.num_views}")
        for field in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            if not cfg[field] > 0:
                raise ConfigError(f"config.method.{field}={cfg[field]} must be > 0")
        for field in ("momentum_teacher", "center_momentum"):
            if not 0.0 <= cfg[field] <= 1.0:
                raise ConfigError(f"config.method.{field}={cfg[field]} must lie within [0, 1]")
        epochs = cfg.warmup_teacher_temp_epochs
        if epochs < 0:
            raise ConfigError(f"config.method.warmup_teacher_temp_epochs={epochs} must be >= 0")
        if cfg.teacher_temp_per_epoch and epochs != round(epochs):
            raise ConfigError(
                f"config.method.warmup_teacher_temp_epochs={epochs} is not a whole number of "
                "epochs, which a per-epoch warm-up needs: round it, or set "
                "config.method.teacher_temp_per_epoch=False for a per-step ramp")

    @property
    def n_global(self) -> int:
        return self.spec.global_count

    @property
    def target(self) -> EMATarget:
        return EMATarget(TEACHER_PARTS, self.config.momentum_teacher,
                         self.length.total_steps)

    def teacher_temp(self, step: jax.Array | int) -> jax.Array:
        """Teacher temperature at `step`: `warmup_teacher_temp` -> `teacher_temp`
        linearly over `warmup_teacher_temp_epochs`, then constant."""
        cfg = self.config
        return self.temperature_warmup(cfg.warmup_teacher_temp, cfg.teacher_temp)(step)

    def temperature_warmup(self, start: float, end: float) -> optax.Schedule:
        """`start` -> `end` over `warmup_teacher_temp_epochs`: once per epoch as the
        official `np.linspace` schedule, or per step without `teacher_temp_per_epoch`."""
        cfg = self.config
        spe = self.length.steps_per_epoch
        if cfg.teacher_temp_per_epoch:
            return per_epoch_linspace(start, end, round(cfg.warmup_teacher_temp_epochs), spe)
        return warmup_constant(start, end, round(cfg.warmup_teacher_temp_epochs * spe))

    def head(self) -> heads.DINOHead:
        cfg = self.config
        return heads.DINOHead(
            out_dim=cfg.out_dim, hidden_dim=cfg.hidden_dim, bottleneck_dim=cfg.bottleneck_dim,
            use_bn=cfg.use_bn_in_head, norm_last_layer=cfg.norm_last_layer, dtype=self.dtype)

    def backbone(self, teacher: bool = False):
        """The student's backbone, or the teacher's: the same without drop-path."""
        model = self.model
        if teacher:
            model = ml_collections.ConfigDict({**model.to_dict(), "drop_path": 0.0})
        return build_backbone(model, image_size=self.spec.image_size, dtype=self.dtype,
                              mask_token=self.mask_token)

    def network(self, teacher: bool = False) -> Encoder:
        return Encoder(backbone=self.backbone(teacher), projector=self.head())

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        params, state = super().init(rng, batch)
        return params, {
            **state,
            "teacher": self.target.init(params, state["batch_stats"]),
            "center": jnp.zeros([self.config.out_dim], jnp.float32),
        }

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        views = batch["views"]
        student, batch_stats = forward(self.network(), params, state["batch_stats"], views,
                                       train=True, rng=rng)
        teacher, teacher_state = self.teacher_forward(state["teacher"], views[:self.n_global])
        student_logits = [out["projection"] for out in student]
        teacher_logits = [out["projection"] for out in teacher]
        temp = self.teacher_temp(step)
        loss = losses.dino_loss(student_logits, teacher_logits, state["center"],
                                self.config.student_temp, temp)
        center = losses.update_center(state["center"], teacher_logits,
                                      self.config.center_momentum)
        new_state = {"batch_stats": batch_stats, "teacher": teacher_state, "center": center}
        return loss, (new_state, {"teacher_temp": temp})

    def teacher_forward(self, teacher: PyTree, views: Sequence[jax.Array]) -> tuple[list, PyTree]:
        """Teacher outputs (no gradient) of `views` in train mode, and the teacher
        state with its BatchNorm statistics updated."""
        teacher = jax.lax.stop_gradient(teacher)
        outputs, stats = forward(self.network(teacher=True), teacher["params"],
                                 teacher["batch_stats"], views, train=True)
        return jax.lax.stop_gradient(outputs), {**teacher, "batch_stats": stats}

    def after_update(self, params: PyTree, state: PyTree, step: jax.Array) -> PyTree:
        return {**state, "teacher": self.target.update(state["teacher"], params, step)}

    def embed_variables(self, params: PyTree, state: PyTree) -> PyTree:
        """The teacher's weights: evaluation and export embed with its backbone."""
        teacher = state["teacher"]
        return {"params": teacher["params"], "batch_stats": teacher["batch_stats"]}
