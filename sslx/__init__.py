"""sslx: self-supervised visual representation learning in JAX/Flax.

    import sslx
    model = sslx.load(workdir)          # a trained run's latest checkpoint
    features = model.embed(images)      # numpy [N, D]

    config = sslx.config("configs/simclr_fmnist.py:runlocal", **{"train.steps": 100})
    sslx.fit(config, workdir)           # trains in this process; re-running resumes

    features, labels = sslx.read_embeddings(workdir, "test")  # what --mode=export wrote
    for features, labels in sslx.iter_embeddings(workdir, "test"):  # one shard at a time
        ...

(`fit`, not `train`: `sslx.train` is the training module.)

The API is imported on first use, so `import sslx.config_defaults` (what recipe
files do) stays free of jax and TensorFlow.
"""

from typing import Any

_API = ("Model", "config", "fit", "load", "load_backbone")
_EXPORT = ("iter_embeddings", "read_embeddings")


def __getattr__(name: str) -> Any:
    if name in _API:
        from sslx import api

        return getattr(api, name)
    if name in _EXPORT:
        from sslx.evaluators import export

        return getattr(export, name)
    raise AttributeError(f"module 'sslx' has no attribute {name!r}")


__all__ = [*_API, *_EXPORT]
