"""Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual
Representations by Solving Jigsaw Puzzles"): a classifier of which permutation,
out of a fixed set, shuffled the 9 tiles of an image.

The input pipeline cuts and shuffles the tiles and labels them with the index of
the permutation (the "jigsaw" producer, `sslx.data.pretext`). The permutation set
is a pure function of `method.num_permutations` and `method.permutation_seed`
(`pretext.permutation_set`), so a run's saved config.json reproduces it; it is
not kept in the checkpoint.

The network is the paper's context-free network (its fc6-fc8 above the tile
encoder) on the configured backbone: the backbone encodes all 9B tiles in one
call (shared weights; BatchNorm statistics over all of them), a shared `fc6`
(Linear + ReLU) maps each tile's features to `tile_dim`, the 9 are concatenated
in tile order, and `head` (`fc7`: Linear + ReLU to `hidden_dim`, then `fc8` to the
permutations) classifies. The official dropout (0.5 after fc6 and fc7) is left
out. Evaluation embeds whole images with the backbone alone, at `spec.eval_size`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx.errors import ConfigError
from sslx.methods import register
from sslx.methods.base import Batch, LossOutput, Method, PyTree, init_variables
from sslx.methods.common import classification_loss, forward
from sslx.models import build_backbone, heads

# 1000 permutations: the official code's (`--classes`) and the paper's main results;
# its ablation of the set (Table 3) transfers better with 1000 than with 100.
DEFAULTS = dict(
    num_permutations=1000,
    permutation_seed=0,   # draws the first permutation of the greedy selection
    tile_dim=1024,        # fc6, per tile
    hidden_dim=4096,      # fc7, over the 9 tiles
    head_init="torch",    # the official code is PyTorch: torch's default Linear
)


class PuzzleSolver(nn.Module):
    """Tiles [B, 9, h, w, 3] -> `{'features': [B, 9, D], 'logits': [B, P]}`; images
    [N, H, W, 3] with `features_only=True` -> `{'features': [N, D]}` (evaluation)."""

    backbone: nn.Module
    num_permutations: int
    tile_dim: int
    hidden_dim: int
    head_init: str = "torch"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool,
                 features_only: bool = False) -> dict[str, jax.Array]:
        if features_only:
            return {"features": self.backbone(x, train=train)}
        batch, tiles = x.shape[:2]
        features = self.backbone(x.reshape(batch * tiles, *x.shape[2:]), train=train)
        per_tile = nn.relu(heads.MLPHead(hidden_dim=0, out_dim=self.tile_dim, num_layers=1,
                                         linear_init=self.head_init, name="fc6")(
            features, train=train))
        logits = heads.MLPHead(hidden_dim=self.hidden_dim, out_dim=self.num_permutations,
                               num_layers=2, hidden_norm=False, linear_init=self.head_init,
                               name="head")(per_tile.reshape(batch, -1), train=train)
        return {"features": features.reshape(batch, tiles, -1), "logits": logits}


@register("jigsaw", defaults=DEFAULTS)
class Jigsaw(Method):
    """Config: `method.num_permutations`, `method.permutation_seed`, `method.tile_dim`,
    `method.hidden_dim`, `method.head_init`. One crop (`config.views` with one crop,
    of at least 3 px per grid cell); the batch holds its 9 tiles and the permutation
    index. Loss: softmax cross-entropy over the permutations; metric `top1`."""

    batch_level_loss = None  # cross-entropy per puzzle; no BatchNorm in its heads
    inputs = ("jigsaw",)

    def check_config(self) -> None:
        from sslx.data.pretext import NUM_TILES, tile_size

        self.require_views(1)
        cfg = self.config
        possible = math.factorial(NUM_TILES)
        if not (isinstance(cfg.num_permutations, int) and 2 <= cfg.num_permutations <= possible):
            raise ConfigError(f"config.method.num_permutations={cfg.num_permutations!r} must be "
                              f"an integer from 2 to {possible} (9!, every order of the 9 "
                              "tiles); the paper uses 1000 (100 is its smaller set)")
        for field, low in (("tile_dim", 1), ("hidden_dim", 1), ("permutation_seed", 0)):
            if not (isinstance(cfg[field], int) and cfg[field] >= low):
                raise ConfigError(f"config.method.{field}={cfg[field]!r} must be an integer "
                                  f">= {low}")
        crop = self.spec.crops[0]
        if tile_size(crop.size) < 1:
            raise ConfigError(f"config.views.{crop.group}.size={crop.size} is too small for "
                              "a 3 x 3 jigsaw with tiles inside their cells: use a crop of at "
                              "least 3 px (the paper's 225 px gives 64 px tiles)")

    def backbone(self) -> nn.Module:
        """The backbone at the tiles' size, the resolution it trains at (a ViT's native
        grid); it embeds whole images at `spec.eval_size` too."""
        from sslx.data.pretext import tile_size

        return build_backbone(self.model, image_size=tile_size(self.spec.image_size),
                              dtype=self.dtype)

    def network(self) -> nn.Module:
        cfg = self.config
        return PuzzleSolver(self.backbone(), cfg.num_permutations, cfg.tile_dim,
                            cfg.hidden_dim, cfg.head_init)

    def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
        params, batch_stats = init_variables(self.network(), rng,
                                             jnp.stack(batch["views"], axis=1))
        return params, {"batch_stats": batch_stats}

    def loss(self, params: PyTree, state: PyTree, batch: Batch, rng: jax.Array,
             step: jax.Array) -> LossOutput:
        tiles = jnp.stack(batch["views"], axis=1)
        labels = batch["permutation"]
        (outputs,), batch_stats = forward(self.network(), params, state["batch_stats"],
                                          [tiles], train=True, rng=rng)
        loss, top1 = classification_loss(outputs["logits"], labels)
        return loss, ({"batch_stats": batch_stats}, {"top1": top1})
