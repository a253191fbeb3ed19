"""Export streams each host's shard of a split to shard files and one index: their
concatenation is the in-memory embedding, no write holds more than a shard, and
two simulated hosts write the same split as one."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import SMALL_BACKBONE, tiny_config

import sslx
from sslx import train
from sslx.errors import DataError
from sslx.evaluators import embed, export

SHARD = 50
SPLIT = "train"  # 256 images: one host writes shards of 50, 50, 50, 50, 50, 6 rows


@pytest.fixture(scope="module")
def prepared(npz, tmp_path_factory):
    """A ViT run's initial state (export embeds whatever state it is given) and the
    in-memory features and labels of `SPLIT` (`embed.embed_split`)."""
    config = tiny_config(npz=npz, **SMALL_BACKBONE)
    config.unlock()
    config.eval.export_shard_size = SHARD
    config.lock()
    run = train.prepare(config, str(tmp_path_factory.mktemp("export") / "run"),
                        length=train.EMBED_ONLY)
    state = run.init_state()
    expected = embed.embed_split(run.method, state.params, state.method_state, config, SPLIT,
                                 run.mesh)
    return run, state, expected


class Recorder:
    """`export.save_npy` (as it was when made) that also records the rows of every
    array it is handed: no write may hold more than a shard."""

    def __init__(self):
        self.rows: list[int] = []
        self.save = export.save_npy

    def __call__(self, path: str, array: np.ndarray) -> None:
        self.rows.append(len(array))
        self.save(path, array)


def test_streamed_shards_equal_in_memory_features(prepared, tmp_path, monkeypatch):
    run, state, (features, labels) = prepared
    recorder = Recorder()
    monkeypatch.setattr(export, "save_npy", recorder)
    paths = export.export_split(run.method, state.params, state.method_state, run.config,
                                SPLIT, run.mesh, str(tmp_path), step=7)
    split_dir = tmp_path / SPLIT
    assert paths == {"index": str(split_dir / "index.json")}
    assert sorted(os.listdir(split_dir)) == sorted(
        ["index.json"] + [f"{kind}-0-{k}.npy" for kind in ("features", "labels")
                          for k in range(6)])
    assert max(recorder.rows) == SHARD and sum(recorder.rows) == 2 * len(features)

    with open(paths["index"]) as f:
        index = json.load(f)
    assert [s["rows"] for s in index["shards"]] == [50, 50, 50, 50, 50, 6]
    assert [s["offset"] for s in index["shards"]] == [0, 50, 100, 150, 200, 250]
    assert index["shards"][1]["features"] == "features-0-1.npy"
    assert index["shards"][1]["labels"] == "labels-0-1.npy"
    assert (index["num_examples"], index["feature_dim"]) == features.shape
    assert index["step"] == 7 and index["split"] == SPLIT and index["labelled"]
    assert index["method"]["name"] == "simclr" and index["data"]["source"] == "arrays"

    got_features, got_labels = sslx.read_embeddings(str(tmp_path), SPLIT)
    np.testing.assert_allclose(got_features, features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_labels, labels)
    shards = list(sslx.iter_embeddings(paths["index"]))
    assert [len(f) for f, _ in shards] == [50, 50, 50, 50, 50, 6]
    np.testing.assert_array_equal(np.concatenate([f for f, _ in shards]), got_features)


def test_two_hosts_write_the_split_one_host_would(prepared, tmp_path):
    run, state, (features, labels) = prepared
    recorder, host_rows = Recorder(), []
    for host in range(2):
        rows, dim, labelled = export.export_host(
            run.method, state.params, state.method_state, run.config, SPLIT, run.mesh,
            str(tmp_path), process_index=host, process_count=2, save=recorder)
        host_rows.append(rows)
    assert host_rows == [128, 128] and labelled and max(recorder.rows) <= SHARD
    export.write_index(str(tmp_path), SPLIT, host_rows, dim, SHARD, labelled, run.config, 0)
    index = export.read_index(str(tmp_path), SPLIT)
    assert [(s["host"], s["rows"], s["offset"]) for s in index["shards"]] == [
        (0, 50, 0), (0, 50, 50), (0, 28, 100), (1, 50, 128), (1, 50, 178), (1, 28, 228)]
    got_features, got_labels = export.read_embeddings(str(tmp_path / "index.json"))
    # Each host's global batch is half as large: XLA may sum in another order.
    np.testing.assert_allclose(got_features, features, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got_labels, labels)


def test_unlabelled_missing_and_incomplete_exports(tmp_path):
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(n, 3)).astype(np.float32), np.full(n, -1, np.int32))
               for n in (4, 7, 2)]
    recorder = Recorder()
    directory = str(tmp_path / "embeddings" / "photos")
    assert export.write_host_shards(batches, directory, 0, 5, labelled=False,
                                    save=recorder) == (13, 3)
    assert recorder.rows == [5, 5, 3] and not any(p.startswith("labels")
                                                  for p in os.listdir(directory))
    config = tiny_config()
    export.write_index(directory, "photos", [13], 3, 5, False, config, 1)
    features, labels = export.read_embeddings(str(tmp_path), "photos")  # from the workdir
    np.testing.assert_array_equal(features, np.concatenate([f for f, _ in batches]))
    assert labels.dtype == np.int32 and (labels == -1).all() and len(labels) == 13
    with pytest.raises(DataError, match=r"no embeddings index .*test/index\.json"):
        export.read_embeddings(str(tmp_path), "test")
    with pytest.raises(DataError, match="holds split 'photos', not 'test'"):
        export.read_embeddings(os.path.join(directory, "index.json"), "test")
    export.mark_incomplete(directory, "photos")  # as an export that fails midway leaves it
    with pytest.raises(DataError, match="did not finish; run `--mode=export` again"):
        export.read_embeddings(directory)

