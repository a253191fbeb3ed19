"""`launch/colab.ipynb` runs top to bottom outside Colab, on the CPU: it trains in its
own kernel through `sslx.config` / `sslx.fit`, then draws the k-NN curve and the
t-SNE map of the exported embeddings. `sslx.config` finds a recipe from the
directory the kernel starts in.

The notebook's parameters cell reads `SSLX_NOTEBOOK_*` environment variables, so
the notebook runs unchanged on a tiny config (`tiny_overrides`, a ViT-T, the `npz`
arrays). Its kernel is the Python running the tests, so it imports this sslx, and
inherits the suite's jax settings (CPU devices, compilation cache)."""

from __future__ import annotations

import json
import os
import sys

import jax
import nbclient
import nbformat
import pytest
from helpers import REPO, SMALL_BACKBONE, load_config, tiny_overrides
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

import sslx
from sslx.errors import ConfigError

NOTEBOOK = os.path.join(REPO, "launch", "colab.ipynb")
RECIPE = "configs/simclr_fmnist.py"
STEPS = 2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _kernel() -> KernelManager:
    """A kernel of this very Python (ipykernel's built-in spec, which names
    `sys.executable`), whatever `python3` kernels the user has installed."""
    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    assert manager.kernel_spec.argv[0] == sys.executable
    return manager


def _notebook_settings(npz: str, workdir: str) -> dict[str, str]:
    """The environment the parameters cell reads: a two-step run on the `npz` arrays
    with a k-NN point after each step, so the curve has two."""
    overrides = {**tiny_overrides(load_config(RECIPE, "runlocal"), npz), **SMALL_BACKBONE,
                 "train.steps": STEPS, "evals.knn.every_steps": 1}
    return {"SSLX_NOTEBOOK_RECIPE": f"{RECIPE}:runlocal", "SSLX_NOTEBOOK_WORKDIR": workdir,
            "SSLX_NOTEBOOK_OVERRIDES": json.dumps(overrides),
            "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _assert_png(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, path


def test_notebook_trains_and_plots_on_cpu(npz, tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    for name, value in _notebook_settings(npz, workdir).items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, km=_kernel(), timeout=300,
        resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})  # as Jupyter starts it
    client.execute()

    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(STEPS)))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        knn_steps = [record["step"] for record in map(json.loads, f) if "knn_top1_k5" in record]
    assert knn_steps == [1, STEPS]
    _assert_png(os.path.join(workdir, "plots", "knn_curve.png"))
    _assert_png(os.path.join(workdir, "plots", "notebook_tsne.png"))
    shown = [output for cell in notebook.cells if cell.cell_type == "code"
             for output in cell.outputs if "image/png" in output.get("data", {})]
    assert len(shown) == 2  # the k-NN curve and the t-SNE map, displayed in the notebook


def test_config_finds_recipes_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a notebook's kernel starts wherever the notebook lies
    by_name = sslx.config("simclr_fmnist:runlocal", train__steps=3,
                          **{"evals.knn.ks": [5]})
    assert (by_name.train.steps, by_name.evals.knn.ks) == (3, (5,))
    assert by_name.to_dict() == sslx.config(
        f"{REPO}/{RECIPE}:runlocal", **{"train.steps": 3, "evals.knn.ks": (5,)}).to_dict()
    assert sslx.config(RECIPE).model.width == 8  # no argument: not the runlocal variant
    with pytest.raises(ConfigError, match=r"config\.train has no field 'stpes'.*steps"):
        sslx.config(RECIPE, **{"train.stpes": 3})
    with pytest.raises(ConfigError, match=r"did you mean: simclr_fmnist\.py"):
        sslx.config("simclr_fmnst")
