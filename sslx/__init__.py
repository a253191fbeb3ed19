"""sslx: self-supervised visual representation learning in JAX/Flax.

    import sslx
    model = sslx.load(workdir)          # a trained run's latest checkpoint
    features = model.embed(images)      # numpy [N, D]

The API is imported on first use, so `import sslx.config_defaults` (what recipe
files do) stays free of jax and TensorFlow.
"""

from typing import Any

_API = ("Model", "load", "load_backbone")


def __getattr__(name: str) -> Any:
    if name in _API:
        from sslx import api

        return getattr(api, name)
    raise AttributeError(f"module 'sslx' has no attribute {name!r}")


__all__ = list(_API)
