"""A run's outputs land where the workdir says, its config is saved, and the trained
encoder is usable from Python with nothing but the workdir.

One tiny run is trained into TensorFlow's in-memory `ram://` file system, a
non-local file system like `gs://`: every file sslx writes must land there, and
nothing in the current directory."""

from __future__ import annotations

import io
import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_main, small_fmnist_npz, tiny_config
from PIL import Image

import sslx
from sslx import fs, saved_config, train
from sslx.data import pipeline
from sslx.errors import CheckpointError, ConfigError, DataError

WORKDIR = "ram://sslx-test/run"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`(config, workdir, checkpoint dir, npz, cwd)` of a 2-step run into `ram://`,
    started from an empty current directory."""
    root = tmp_path_factory.mktemp("api")
    npz = small_fmnist_npz(str(root / "small.npz"))
    checkpoints = str(root / "checkpoints")  # orbax writes local, gs:// and s3:// only
    config = tiny_config(npz=npz, **{"checkpoint.directory": checkpoints})
    cwd = root / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        train.train_and_evaluate(config, WORKDIR)
    yield config, WORKDIR, checkpoints, npz, cwd
    tf.io.gfile.rmtree("ram://sslx-test")


def _files(root: str) -> set[str]:
    return {os.path.relpath(fs.join(d, f), root) for d, _, files in tf.io.gfile.walk(root)
            for f in files}


def test_every_output_lands_in_a_remote_workdir(trained, monkeypatch):
    _, workdir, checkpoints, _, cwd = trained
    monkeypatch.chdir(cwd)
    sslx.load(workdir).export_backbone(fs.join(workdir, "backbone.msgpack"))
    files = _files(workdir)
    assert {"config.json", "metrics.jsonl", "backbone.msgpack", "embeddings/test/index.json",
            "embeddings/test/features-0-0.npy", "embeddings/test/labels-0-0.npy"} <= files
    features, labels = sslx.read_embeddings(workdir, "test")
    assert features.shape == (128, 64) and (labels >= 0).all()
    assert any(f.startswith("tensorboard/events.out.tfevents") for f in files)
    lines = [json.loads(line) for line in fs.read_text(fs.join(workdir, "metrics.jsonl"))
             .splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2]
    assert "knn_top1_k5" in lines[-1]
    assert os.listdir(cwd) == []  # no local folder named "ram:" (or anything else)
    assert os.path.isdir(os.path.join(checkpoints, "2"))


def test_evaluate_mode_prints_and_saves_every_named_figure(trained, monkeypatch, capsys):
    """`--mode=evaluate` on the saved run: k-NN equals the one at the end of training,
    the probe and the low-label subsets report, and everything lands in the workdir."""
    _, workdir, _, _, cwd = trained
    monkeypatch.chdir(cwd)
    run_main("--mode=evaluate", f"--workdir={workdir}", "--distributed=off",
             "--evals=knn,linear_probe,low_label,collapse",
             "--config.evals.linear_probe.costs=(0.1,1.0)",
             "--config.evals.low_label.fractions=(0.1,)",
             "--config.evals.low_label.shots=(2,)", "--config.evals.low_label.seeds=2")
    printed = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.splitlines())
    saved = json.loads(fs.read_text(fs.join(workdir, "evals.json")))
    evaluated = set(saved["seconds"])  # each evaluator's duration, by name
    assert saved["step"] == 2 and evaluated == {"knn", "linear_probe", "low_label", "collapse"}
    figures = {f"{name} {metric}": value for name, metrics in saved["metrics"].items()
               for metric, value in metrics.items()}
    assert set(figures) == {
        "knn top1_k5", "linear_probe top1", "linear_probe top5", "linear_probe cost",
        "low_label 10pct_top1", "low_label 10pct_top1_std", "low_label 2shot_top1",
        "low_label 2shot_top1_std", "collapse std", "collapse rankme"}
    assert {name: float(printed[name]) for name in figures} == pytest.approx(figures, abs=5e-5)
    trained_lines = fs.read_text(fs.join(workdir, "metrics.jsonl")).splitlines()
    assert figures["knn top1_k5"] == json.loads(trained_lines[-1])["knn_top1_k5"]
    assert 0 <= figures["linear_probe top1"] <= figures["linear_probe top5"] <= 1
    assert figures["linear_probe cost"] in (0.1, 1.0) and figures["collapse rankme"] >= 1
    subsets = fs.join(workdir, "evals", "low_label")
    rows = fs.load_npy(fs.join(subsets, "2shot_seed1.npy"))
    assert len(rows) == 20 and {"10pct_seed0.npy", "2shot_seed0.npy"} <= set(
        tf.io.gfile.listdir(subsets))
    assert os.listdir(cwd) == []


def test_checkpoints_refuse_a_file_system_orbax_cannot_write():
    config = tiny_config()
    with pytest.raises(ConfigError, match=r"ram://elsewhere/checkpoints.*checkpoint\.directory"):
        train.prepare(config, "ram://elsewhere")


def test_resolved_config_is_saved_and_read_back(trained):
    config, workdir, *_ = trained
    saved = saved_config.load(workdir)
    assert saved.to_dict() == config.to_dict()
    assert saved.views.global_crops.blur_prob == config.views.global_crops.blur_prob
    assert json.loads(fs.read_text(saved_config.path(workdir))) == json.loads(
        saved_config.to_json(config))


def test_rerun_may_change_evaluation_but_not_the_recipe(trained, caplog):
    config, workdir, *_ = trained
    changed = saved_config.from_dict({**config.to_dict(), "evals": {
        "knn": {**config.evals.knn.to_dict(), "ks": (3,)}}})
    with caplog.at_level("INFO", logger="sslx"):
        saved_config.save(changed, workdir, write=False)
    assert "config.evals.knn.ks changed" in caplog.text
    other = saved_config.from_dict({**config.to_dict(), "optim": {
        **config.optim.to_dict(), "base_lr": 0.5}})
    with pytest.raises(CheckpointError, match=r"config\.optim\.base_lr=.*this run: 0\.5"):
        saved_config.save(other, workdir, write=False)


def test_rerun_of_a_run_saved_before_a_new_section_continues(trained, tmp_path):
    """A section added to the schema since a run was saved (config.online_probe) is no
    change at its default, and is one when set."""
    config, *_ = trained
    workdir = str(tmp_path / "older")
    saved_config.save(config, workdir)
    older = json.loads(fs.read_text(saved_config.path(workdir)))
    del older["online_probe"]
    fs.write_json(saved_config.path(workdir), older)
    saved_config.save(config, workdir, write=False)
    probed = saved_config.from_dict({**config.to_dict(), "online_probe": {
        **config.online_probe.to_dict(), "num_classes": 10}})
    with pytest.raises(CheckpointError, match=r"config\.online_probe\.num_classes=None"):
        saved_config.save(probed, workdir, write=False)


def test_load_embeds_new_images_as_export_does(trained, tmp_path):
    config, workdir, *_ = trained
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, 40, 36), np.uint8)  # another size than training's 28
    arrays = str(tmp_path / "unseen.npz")
    np.savez(arrays, unseen_images=images)
    model = sslx.load(workdir)
    assert model.step == 2 and model.config.to_dict() == config.to_dict()
    assert jax.tree.structure(model.params) == jax.tree.structure(
        train.prepare(config, workdir, length=train.EMBED_ONLY).abstract_state.params)

    export_config = saved_config.from_dict({**config.to_dict(), "data": {
        **config.data.to_dict(), "source": "arrays", "path": arrays}})
    exported = train.export(export_config, workdir, "unseen")["embeddings"]
    expected, _ = sslx.read_embeddings(exported["index"])
    features = model.embed(images, batch_size=4)  # 3 batches, the last one padded
    assert features.shape == expected.shape == (11, 64) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.embed(images[..., None] / np.float32(255)), expected,
                               rtol=1e-4, atol=1e-4)


def test_exported_backbone_reproduces_embed(trained, tmp_path):
    _, workdir, *_ = trained
    model = sslx.load(workdir)
    path = model.export_backbone(str(tmp_path / "backbone.msgpack"))
    module, variables, info = sslx.load_backbone(path)
    assert info["image_size"] == model.image_size and info["step"] == 2
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28, 3), np.uint8)
    preprocess = pipeline.eval_preprocess(model.config, info["image_size"])
    inputs = np.stack([preprocess(tf.constant(image)).numpy() for image in images])
    np.testing.assert_allclose(module.apply(variables, inputs, train=False),
                               model.embed(images), rtol=1e-5, atol=1e-5)


def test_embed_refuses_images_it_cannot_read(trained):
    model = sslx.load(trained[1])
    with pytest.raises(DataError, match=r"int64 \[2, 8, 8, 2\]"):
        model.embed(np.zeros((2, 8, 8, 2), np.int64))


def test_load_of_an_empty_workdir_names_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="holds no sslx run"):
        sslx.load(str(tmp_path))


def _jpeg_png_folder(root, count: int = 24) -> str:
    """A flat folder of unlabelled images: JPEG and PNG mixed, varied sizes."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(count):
        side = 20 + i % 5 * 4
        image = Image.fromarray(rng.integers(0, 256, (side, side + 4, 3), np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG" if i % 2 else "PNG")
        (root / f"{i:02d}.{'jpg' if i % 2 else 'png'}").write_bytes(buffer.getvalue())
    return str(root)


def test_unlabelled_flat_folder_trains_and_exports(tmp_path, caplog):
    folder = _jpeg_png_folder(tmp_path / "photos")
    config = tiny_config(**{"data.source": "folder", "data.path": folder,
                            "data.image_size": 20, "eval.batch_size": 8})
    workdir = str(tmp_path / "run")
    with caplog.at_level("INFO", logger="sslx"):
        results = train.train_and_evaluate(config, workdir)
    assert "k-NN skipped" in caplog.text and "unlabelled" in caplog.text
    assert not any(key.startswith("knn") for key in results)
    features, labels = sslx.read_embeddings(results["embeddings"]["index"])
    assert features.shape == (24, 64) and (labels == -1).all()
    index = fs.read_json(results["embeddings"]["index"])
    assert not index["labelled"] and index["shards"][0]["labels"] is None
    assert not any(name.startswith("labels") for name in os.listdir(
        os.path.dirname(results["embeddings"]["index"])))


def test_missing_eval_split_fails_before_compiling(npz, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "make_train_step", lambda run: pytest.fail("compiled"))
    config = tiny_config(npz=npz, **{"data.eval_split": "validation"})
    with pytest.raises(DataError, match=r"no split 'validation'.*data\.eval_split"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "config.json")
