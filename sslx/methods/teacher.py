"""An EMA target ("teacher", "momentum encoder") network, as BYOL, MoCo v3 and DINO use.

The target is a copy of some top-level parts of the online params (e.g.
`backbone` and `projector`, not the predictor) and their BatchNorm statistics,
kept in the method's state so the optimizer never sees it. After each
optimizer step its params follow the online params by `schedules.ema_update`
with a momentum that rises from `base_momentum` to 1 along a half cosine over
the run (`schedules.cosine_ramp`): BYOL's tau_k = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2.

Its BatchNorm statistics are not averaged: as in the reference implementations
(BYOL's haiku state, MoCo v3's momentum-encoder buffers) the target's own
train-mode forward updates them, and the method threads them back in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax

from sslx.methods.base import PyTree
from sslx.schedules import cosine_ramp, ema_update


@dataclasses.dataclass(frozen=True)
class EMATarget:
    """`parts`: top-level names in the online param tree that the target copies;
    `base_momentum`: the momentum at step 0; `total_steps`: where it reaches 1.

    The target state is `{'params': {part: ...}, 'batch_stats': {part: ...}}`
    (parts without BatchNorm have no `batch_stats` entry), so a module built from
    the same parts applies to it directly."""

    parts: Sequence[str]
    base_momentum: float
    total_steps: int

    def momentum(self, step: jax.Array | int) -> jax.Array:
        """EMA momentum used by the update after step `step` (0-based)."""
        return cosine_ramp(self.base_momentum, 1.0, self.total_steps)(step)

    def init(self, params: PyTree, batch_stats: PyTree) -> PyTree:
        """The target starts as an exact copy of the online parts."""
        missing = [part for part in self.parts if part not in params]
        if missing:
            raise ValueError(f"EMATarget: online params have no {missing}; "
                             f"top-level parts are {sorted(params)}")
        return {"params": self._select(params), "batch_stats": self._select(batch_stats)}

    def update(self, target: PyTree, params: PyTree, step: jax.Array | int) -> PyTree:
        """`m * target + (1 - m) * online` for the params, m = `momentum(step)`;
        the target's batch statistics are left as its forward pass made them."""
        return {**target, "params": ema_update(target["params"], self._select(params),
                                               self.momentum(step))}

    def _select(self, tree: PyTree) -> PyTree:
        return {part: tree[part] for part in self.parts if part in tree}
