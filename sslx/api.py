"""A trained run from Python, with nothing but its workdir:

    import sslx
    model = sslx.load("/tmp/sslx_demo")
    features = model.embed(images)  # uint8 or [0, 1] float [N, H, W, C] -> float32 [N, D]

`load` reads the config the run saved and restores its latest checkpoint; the
training data need not be present. `embed` preprocesses exactly as evaluation
and `--mode=export` do, so its features equal the exported ones.

Training from Python (a notebook whose kernel holds the TPU or GPU), as
`python -m sslx.main --config=... --workdir=...` does for one process:

    config = sslx.config("configs/simclr_fmnist.py:runlocal", **{"train.epochs": 2})
    results = sslx.fit(config, "/tmp/sslx_demo")  # re-running it resumes
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tensorflow as tf
from flax import serialization

from sslx import config_defaults, fs, recipes, saved_config, sharding, train
from sslx.data import pipeline
from sslx.errors import ConfigError, DataError, close_matches
from sslx.evaluators.embed import eval_image_size
from sslx.methods.base import Method
from sslx.models import build_backbone

BACKBONE_FILE = "backbone.msgpack"
# The checkout `configs/` lies in (an editable install's source tree).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

log = logging.getLogger("sslx")


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


def config(recipe: str, **overrides: Any) -> ml_collections.ConfigDict:
    """The config `--config=RECIPE --config.KEY=VALUE ...` gives, for `fit`.

    `recipe` is a recipe file with an optional `:ARG` (`configs/simclr_fmnist.py:runlocal`),
    found from the current directory or from the checkout sslx is installed from, or
    a bare name in its `configs/` (`simclr_fmnist:runlocal`), so a notebook finds it
    from whatever directory its kernel starts in. `overrides` are dotted keys
    (`**{"train.steps": 100}`), or `__` for the dots as keyword arguments
    (`train__steps=100`); a list stands for a tuple field (JSON has no tuples)."""
    path, arg = _recipe_file(recipe)
    module = recipes.sibling_recipe(path, os.path.basename(path))
    result = module.get_config() if arg is None else module.get_config(arg)
    for key, value in overrides.items():
        _override(result, key.replace("__", "."), value)
    return result


def fit(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` into `workdir` in this process, as `python -m sslx.main
    --config=... --workdir=WORKDIR` does for one process, then evaluates and exports
    embeddings. A notebook trains through this because its kernel, once it imported
    jax, holds the TPU: a `!python -m sslx.main` beside it could not open the TPU
    and would train on the CPU. Re-running on the same workdir resumes from its
    latest checkpoint (a finished run is only evaluated again). Returns the figures
    and written paths of `sslx.train.train_and_evaluate`."""
    setup_process()
    return train.train_and_evaluate(config, workdir)


def setup_process() -> None:
    """What the command line sets up before it runs anything: sslx's progress and
    evaluation lines at INFO (other libraries' at WARNING) on stderr, and TensorFlow,
    which only feeds data, kept off the GPUs, which are jax's."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", force=True)
    log.setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices: too late to hide any
        if tf.config.get_visible_devices("GPU"):
            log.warning("TensorFlow started on the GPUs before sslx could keep it off them, "
                        "and may hold memory jax needs; restart the runtime and train before "
                        "other TensorFlow code runs")


def _recipe_file(recipe: str) -> tuple[str, str | None]:
    """(path of the recipe file, its argument or None) of `config`'s `recipe`."""
    name, _, arg = recipe.partition(":")
    candidates = [name, os.path.join(REPO_ROOT, name),
                  os.path.join(REPO_ROOT, "configs", name),
                  os.path.join(REPO_ROOT, "configs", f"{name}.py")]
    for path in candidates:
        if os.path.isfile(path):
            return path, arg if ":" in recipe else None
    known = sorted(os.listdir(os.path.join(REPO_ROOT, "configs"))
                   if os.path.isdir(os.path.join(REPO_ROOT, "configs")) else [])
    raise ConfigError(f"no recipe file {name!r} here or in {REPO_ROOT}/configs"
                      f"{close_matches(os.path.basename(name), known)}")


def _override(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """`config.<key> = value`; a misspelt key fails naming its close matches, as a
    misspelt `--config.<key>` does on the command line."""
    try:
        config_defaults.set_field(config, key, value)
    except (AttributeError, KeyError):
        raise ConfigError(_unknown_field(config, key)) from None


def _unknown_field(config: ml_collections.ConfigDict, key: str) -> str:
    """Which part of the dotted `key` `config` lacks, with the fields it has instead."""
    section, where = config, "config"
    for part in key.split("."):
        if not isinstance(section, ml_collections.ConfigDict) or part not in section:
            known = section.keys() if isinstance(section, ml_collections.ConfigDict) else ()
            return f"{where} has no field {part!r}{close_matches(part, known)}"
        section, where = section[part], f"{where}.{part}"
    return f"config has no field {key!r}"


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
