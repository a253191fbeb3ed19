"""Pictures: each plot writes a valid PNG of its expected size; the pictures evaluator
draws them for a ViT run, with the class token's attention of the last block."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from helpers import SMALL_BACKBONE, tiny_config
from PIL import Image

from sslx import evaluators, plots, train
from sslx.evaluators import pictures


def _png_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as image:
        assert image.format == "PNG" and os.path.getsize(path) > 1000
        return image.size


def test_each_plot_writes_a_png_of_its_size(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.concatenate([rng.integers(0, 10, 200), [-1] * 10])
    path = plots.embedding_map(rng.normal(size=(210, 2)), labels, str(tmp_path / "map.png"), "m")
    assert _png_size(path) == (700, 600)
    images = rng.integers(0, 256, (3, 9, 16, 16, 3), np.uint8)
    path = plots.retrieval_grid(images[:, 0], images[:, 1:], rng.random((3, 8)) > 0.5,
                                str(tmp_path / "grid.png"), "g")
    assert _png_size(path) == (990, 370)
    path = plots.attention_maps(images[:2, 0], rng.random((2, 3, 4, 4)),
                                str(tmp_path / "attention.png"), "a")
    assert _png_size(path) == (440, 260)
    records = [{"step": s, "loss": 1 / s, "lr": 0.1, "images_per_sec": 9.0} for s in (1, 2, 3)]
    records.append({"step": 3, "knn_top1_k20": 0.5})
    assert plots.curve_names(records) == ["loss", "lr", "knn_top1_k20"]
    path = plots.training_curves(records, str(tmp_path / "curves.png"), "c")
    assert _png_size(path) == (1200, 300)


def test_neighbours_leave_the_query_out_and_queries_cover_the_classes():
    features = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, 0]], np.float32)
    np.testing.assert_array_equal(pictures.nearest_neighbours(features, np.array([0, 2]), 2),
                                  [[1, 3], [3, 1]])
    labels = np.array([0, 0, 1, 1, 2, 2, -1])
    queries = pictures.spread_queries(labels, 4)
    assert labels[queries].tolist() == [0, 1, 2, 0]


def test_pictures_of_a_vit_run_include_its_attention(npz, tmp_path, caplog):
    config = tiny_config(npz=npz, **SMALL_BACKBONE)
    run = train.prepare(config, str(tmp_path))
    state = run.init_state()
    section = evaluators.default_config("pictures").to_dict()
    section.update(max_examples=40, maps=("tsne",), queries=2, neighbours=3, attention_images=2)
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 1, "loss": 2.0, "lr": 0.1}) + "\n")
    evaluator = evaluators.build("pictures", ml_collections.ConfigDict(section), run)
    with caplog.at_level("INFO", logger="sslx"):
        assert evaluator.evaluate(state) == {}
    written = sorted(os.listdir(tmp_path / "plots"))
    assert written == ["attention_step0.png", "curves_step0.png", "retrieval_step0.png",
                       "tsne_step0.png"]
    for name in written:
        _png_size(str(tmp_path / "plots" / name))
    images = np.random.default_rng(0).normal(size=(2, 28, 28, 3)).astype(np.float32)
    backbone = run.method.backbone()
    variables = run.method.backbone_variables(state.params, state.method_state)
    maps = pictures.attention_of_class_token(backbone, variables, images)
    assert maps.shape == (2, backbone.num_heads, 7, 7) and (maps >= 0).all()
    assert (maps.sum(axis=(2, 3)) < 1 + 1e-5).all()  # the rest is the token's own share
    assert not np.allclose(maps[0], maps[1])
