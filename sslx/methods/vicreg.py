"""VICReg (Bardes, Ponce & LeCun 2022): invariance between the two views'
projections, a hinge keeping each dimension's std over the global batch at 1,
and a penalty on the off-diagonal covariance."""

from __future__ import annotations

import flax.linen as nn
import jax

from sslx import losses
from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, PyTree
from sslx.methods.common import TwoViewMethod, wide_projector

# configs/vicreg_resnet50.py (Bardes et al. 2022, Sec. 4.3).
DEFAULTS = dict(sim_weight=25.0, var_weight=25.0, cov_weight=1.0, projector_hidden_dim=8192,
                projector_dim=8192)


@register("vicreg", defaults=DEFAULTS)
class VICReg(TwoViewMethod):
    """Config: `method.sim_weight`, `method.var_weight`, `method.cov_weight` (the
    paper's λ, μ, ν), `method.projector_hidden_dim`, `method.projector_dim`.

    Logged: the unweighted `invariance`, `variance` and `covariance` terms."""

    batch_level_loss = "takes the variance and covariance of its projections over the batch"

    def check_config(self) -> None:
        super().check_config()
        for field in ("sim_weight", "var_weight", "cov_weight"):
            if not self.config[field] >= 0:
                raise ConfigError(f"config.method.{field}={self.config[field]} "
                                  "must be >= 0")

    def heads(self) -> dict[str, nn.Module]:
        return {"projector": wide_projector(self.config, self.dtype)}

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        outputs, batch_stats = self.forward_views(params, state, batch["views"], rng)
        z_a, z_b = (out["projection"] for out in outputs)
        terms = losses.vicreg_terms(z_a, z_b)
        cfg = self.config
        loss = (cfg.sim_weight * terms.invariance + cfg.var_weight * terms.variance
                + cfg.cov_weight * terms.covariance)
        return loss, ({"batch_stats": batch_stats}, terms._asdict())
