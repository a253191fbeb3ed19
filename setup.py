"""sslx: self-supervised visual representation learning in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="sslx",
    version="0.1.0",
    description="Self-supervised visual representation learning in JAX/Flax for TPU and GPU.",
    packages=find_packages(include=["sslx", "sslx.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorflow-cpu>=2.18",
        "tensorflow-datasets>=4.9",
        "ml-collections>=1.0",
        "einops>=0.8",
        "numpy",
    ],
    extras_require={
        "test": ["pytest>=8", "ruff>=0.6", "scikit-learn>=1.4"],
        "bench": ["scikit-learn>=1.4"],
    },
)
