"""A trained run from Python, with nothing but its workdir:

    import sslx
    model = sslx.load("/tmp/sslx_demo")
    features = model.embed(images)  # uint8 or [0, 1] float [N, H, W, C] -> float32 [N, D]

`load` reads the config the run saved and restores its latest checkpoint; the
training data need not be present. `embed` preprocesses exactly as evaluation
and `--mode=export` do, so its features equal the exported ones.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tensorflow as tf
from flax import serialization

from sslx import fs, saved_config, sharding, train
from sslx.data import pipeline
from sslx.errors import DataError
from sslx.evaluators.embed import eval_image_size
from sslx.methods.base import Method
from sslx.models import build_backbone

BACKBONE_FILE = "backbone.msgpack"


@dataclasses.dataclass
class Model:
    """A restored run: `params`, `method_state` and `step` of its latest checkpoint,
    the `config` it was trained with, and `embed` for new images."""

    config: ml_collections.ConfigDict
    method: Method
    params: Any
    method_state: Any
    step: int
    mesh: jax.sharding.Mesh

    def __post_init__(self):
        self._embed = jax.jit(self.method.embed, out_shardings=sharding.data_sharding(self.mesh))
        self._preprocess = pipeline.eval_preprocess(self.config, self.image_size)

    @property
    def image_size(self) -> int:
        """The side images are resized (and cropped) to before the backbone."""
        return eval_image_size(self.method.spec)

    def embed(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Backbone features float32 [N, D] of images [N, H, W] or [N, H, W, 1|3]
        (uint8 in 0..255, or float in [0, 1]), any size, in batches of `batch_size`."""
        images = _as_rgb(images)
        batch = -(-min(batch_size, len(images)) // self.mesh.size) * self.mesh.size
        dataset = (tf.data.Dataset.from_tensor_slices(images)
                   .map(self._preprocess).batch(batch))
        features = []
        for chunk in dataset.as_numpy_iterator():
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]),
                                                     chunk.dtype)])
            out = self._embed(self.params, self.method_state,
                              sharding.global_batch(padded, self.mesh))
            features.append(np.asarray(out, np.float32)[:len(chunk)])
        return np.concatenate(features)

    def export_backbone(self, path: str) -> str:
        """Writes the backbone alone (the network `embed` runs) to one flax msgpack
        file with what rebuilds it; `load_backbone(path)` reads it back."""
        variables = jax.device_get(self.method.backbone_variables(self.params,
                                                                  self.method_state))
        fs.write(path, serialization.msgpack_serialize({
            "model": json.dumps(self.config.model.to_dict()),
            "image_size": self.image_size,
            "mean": list(self.config.data.mean),
            "std": list(self.config.data.std),
            "step": self.step,
            "variables": variables,
        }))
        return path


def load(workdir: str, config: ml_collections.ConfigDict | None = None) -> Model:
    """The latest checkpoint of the run in `workdir`, with its saved config (or
    `config`, e.g. the saved one with another `data.path`)."""
    config = config or saved_config.load(workdir)
    run = train.prepare(config, workdir, length=train.EMBED_ONLY,
                        mesh=sharding.make_mesh(jax.local_devices()))
    try:
        state = run.restore_state()
    finally:
        run.checkpointer.close()
    return Model(config=config, method=run.method, params=state.params,
                 method_state=state.method_state, step=int(state.step), mesh=run.mesh)


def load_backbone(path: str) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """`(module, variables, info)` from `Model.export_backbone`'s file: features are
    `module.apply(variables, images, train=False)` on images of side
    `info['image_size']`, normalised with `info['mean']` and `info['std']`."""
    contents = serialization.msgpack_restore(fs.read_bytes(path))
    model_config = ml_collections.ConfigDict(json.loads(contents["model"]))
    module = build_backbone(model_config, image_size=int(contents["image_size"]))
    info = {key: contents[key] for key in ("image_size", "mean", "std", "step")}
    info["model"] = model_config.to_dict()
    return module, contents["variables"], info


def _as_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 or float32 [N, H, W, 3] from the shapes and dtypes `embed` accepts."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    floating = np.issubdtype(images.dtype, np.floating)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images) or not (
            floating or images.dtype == np.uint8):
        raise DataError(f"images are {images.dtype} {list(images.shape)}; expected uint8 "
                        "(0..255) or float (0..1) [N, H, W] or [N, H, W, 1|3] with N > 0")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images.astype(np.float32) if floating else images
