"""Reconstructions of masked images, as MAE's paper shows them: for the first
`images` images of the eval split, the masked input, the decoder's prediction of
every patch, the prediction with the visible patches pasted back, and the image.
Written to `WORKDIR/plots/reconstruction_step<step>.png`; the metric `masked_mse`
is the mean squared error of the prediction on the masked patches of those
images, in the network's (normalised) pixels.

For methods that reconstruct (`method.reconstruct(params, state, images, rng) ->
(reconstruction, mask)`: MAE). The mask is drawn from a fixed seed, so the
pictures of successive steps hide the same patches.
"""

from __future__ import annotations

import logging
from typing import Any

import einops
import jax
import ml_collections
import numpy as np

from sslx import fs
from sslx.errors import ConfigError
from sslx.evaluators import register
from sslx.evaluators.base import Evaluator

log = logging.getLogger("sslx")
MASKED_GREY = 128  # what a masked patch shows in the masked input


def patch_mask_image(mask: np.ndarray, grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """The patch mask [B, N] (True = masked) as a pixel mask [B, H, W, 1]."""
    mask = einops.rearrange(np.asarray(mask, bool), "b (h w) -> b h w", h=grid[0], w=grid[1])
    return np.repeat(np.repeat(mask, patch_size, axis=1), patch_size, axis=2)[..., None]


@register("reconstruction", defaults=dict(
    images=8,  # eval-split images shown (the first ones), one row each
    seed=0,    # of the masks drawn
))
class Reconstruction(Evaluator):
    """Metric `masked_mse`; process 0 writes the PNG."""

    def __init__(self, name: str, config: ml_collections.ConfigDict, run: Any):
        from sslx.evaluators.embed import check_split  # imports TensorFlow

        super().__init__(name, config, run)
        where = f"config.evals.{name}"
        self.require_method("reconstruct", "mae")
        if not (isinstance(config.images, int) and config.images >= 1):
            raise ConfigError(f"{where}.images={config.images!r} must be an integer >= 1")
        check_split(run.config, run.config.data.eval_split, "config.data.eval_split",
                    f"--config.evals.{name}.enabled=False")
        self._reconstruct = jax.jit(run.method.reconstruct)  # traced on first use, once

    def evaluate(self, state: Any) -> dict[str, float]:
        from sslx import plots  # imports matplotlib
        from sslx.evaluators.embed import embed_examples, normalized_images, uint8_images

        run, step = self.run, int(state.step)
        _, _, originals = embed_examples(run.method, state.params, state.method_state,
                                         run.config, run.config.data.eval_split, run.mesh,
                                         self.config.images)
        images = normalized_images(originals, run.config.data)
        reconstruction, mask = self._reconstruct(
            state.params, state.method_state, images, jax.random.PRNGKey(self.config.seed))
        reconstruction, mask = np.asarray(reconstruction, np.float32), np.asarray(mask)
        method = run.method
        pixels = patch_mask_image(mask, method.grid, method.model.patch_size)
        masked_error = np.square(reconstruction - images) * pixels
        metrics = {"masked_mse": float(masked_error.sum() /
                                       (pixels.sum() * images.shape[-1]))}
        if jax.process_index() != 0:
            return metrics
        data = run.config.data
        predicted = uint8_images(reconstruction, data)
        directory = fs.join(run.workdir, "plots")
        fs.makedirs(directory)
        path = plots.reconstructions(
            np.where(pixels, np.uint8(MASKED_GREY), originals), predicted,
            np.where(pixels, predicted, originals), originals,
            fs.join(directory, f"reconstruction_step{step}.png"),
            f"{run.config.method.name} step {step}, {data.eval_split} split, "
            f"{mask.mean():.0%} of patches masked")
        log.info("%s: wrote %s", self.name, path)
        return metrics
