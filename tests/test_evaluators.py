"""Evaluators: the registry, the loop calling each at its `every_steps` and at the end,
and the streamed k-NN evaluator against k-NN of the whole embedded splits."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest
from helpers import tiny_config

from sslx import evaluators, train
from sslx.errors import ConfigError, DataError
from sslx.evaluators.embed import embed_split
from sslx.evaluators.knn import knn_accuracy

CALLS: list[tuple[str, int]] = []


@evaluators.register("test_probe", defaults={"value": 0.5})
class Probe(evaluators.Evaluator):
    """Records the step of every state it evaluates."""

    def evaluate(self, state):
        CALLS.append((self.name, int(state.step)))
        return {"value": self.config.value}


def _with_evals(config, **sections):
    config.evals.unlock()
    for name, section in sections.items():
        config.evals[name] = section
    config.evals.lock()
    return config


def test_registry_builds_sections_and_names_mistakes():
    assert {"knn", "test_probe"} <= set(evaluators.names())
    section = evaluators.default_config("knn")
    assert section.to_dict() == {"type": "knn", "every_steps": 0, "enabled": True,
                                 "ks": (20, 200), "temperature": 0.07}
    with pytest.raises(ConfigError, match=r"config\.evals\.x\.type='knnn'.*did you mean: knn"):
        evaluators.build("x", ml_collections.ConfigDict({"type": "knnn"}), run=None)
    with pytest.raises(ConfigError, match=r"config\.evals\.p has valeu.*did you mean: value"):
        evaluators.build("p", ml_collections.ConfigDict({"type": "test_probe", "valeu": 1.0}),
                         run=None)
    probe = evaluators.build("p", ml_collections.ConfigDict({"type": "test_probe"}), run=None)
    assert probe.config.value == 0.5 and probe.config.every_steps == 0  # defaults fill in
    assert not probe.due(3)


def test_loop_runs_evaluators_at_their_steps_and_at_the_end(npz, tmp_path):
    config = _with_evals(
        tiny_config(npz=npz, **{"train.steps": 4, "evals.knn.every_steps": 2,
                                "eval.export_at_end": False}),
        every2=evaluators.default_config("test_probe", every_steps=2),
        end=evaluators.default_config("test_probe", every_steps=0),
        off=evaluators.default_config("test_probe", every_steps=1, enabled=False))
    CALLS.clear()
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    assert sorted(CALLS) == [("end", 4), ("every2", 2), ("every2", 4)]
    assert results["every2_value"] == results["end_value"] == 0.5
    assert 0 <= results["knn_top1_k5"] <= 1 and "embeddings" not in results
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert [line["step"] for line in lines if "knn_top1_k5" in line] == [2, 4]
    assert [line["step"] for line in lines if "every2_value" in line] == [2, 4]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3, 4]
    assert lines[-1]["knn_top1_k5"] == results["knn_top1_k5"]


def test_streamed_knn_equals_knn_of_the_whole_embedded_splits(npz, tmp_path):
    """Eval batches of 48 pad the last batch of both splits (256 and 128 images); k=300
    is larger than the bank."""
    config = tiny_config(npz=npz, **{"evals.knn.ks": (1, 5, 300), "eval.batch_size": 48})
    run = train.prepare(config, str(tmp_path))
    state = run.init_state()
    got = evaluators.build("knn", config.evals.knn, run).evaluate(state)
    bank, bank_labels = embed_split(run.method, state.params, state.method_state, config,
                                    "train", run.mesh)
    queries, query_labels = embed_split(run.method, state.params, state.method_state, config,
                                        "test", run.mesh)
    assert len(bank) == 256 and len(queries) == 128
    want = knn_accuracy(bank, bank_labels, queries, query_labels, ks=(1, 5, 300),
                        temperature=0.07)
    assert got == {f"top1_k{k}": value for k, value in want.items()}


@pytest.mark.parametrize("unlabelled, message", [
    (slice(0, None, 4), "split 'train' has unlabelled images"),  # seen in the first batch
    (slice(250, None), "split 'train' has 6 unlabelled images"),  # seen at the end
    (slice(0, 3), "split 'test' has 3 unlabelled images"),  # queries: before the bank
])
def test_knn_is_skipped_where_a_split_is_partly_unlabelled(unlabelled, message, npz, tmp_path,
                                                           caplog):
    arrays = dict(np.load(npz))
    split = "test" if "'test'" in message else "train"
    arrays[f"{split}_labels"][unlabelled] = -1
    partly = str(tmp_path / "partly.npz")
    np.savez(partly, **arrays)
    config = tiny_config(npz=partly)
    run = train.prepare(config, str(tmp_path))
    evaluator = evaluators.build("knn", config.evals.knn, run)
    state = run.init_state()
    with caplog.at_level("INFO", logger="sslx"):
        assert evaluator.evaluate(state) == {}
        assert evaluator.evaluate(state) == {}  # known now: the splits are not read again
    assert caplog.text.count(f"k-NN skipped: {message}") == 2


@pytest.mark.parametrize("overrides, message", [
    ({"evals.knn.ks": (5, 0)}, r"config\.evals\.knn\.ks=\(5, 0\) must be one or more positive"),
    ({"evals.knn.temperature": 0.0}, r"config\.evals\.knn\.temperature=0\.0 must be > 0"),
])
def test_bad_knn_settings_fail_before_compiling(overrides, message, npz, tmp_path, monkeypatch):
    monkeypatch.setattr(train.Run, "init_state", lambda run: pytest.fail("compiled"))
    with pytest.raises(ConfigError, match=message):
        train.train_and_evaluate(tiny_config(npz=npz, **overrides), str(tmp_path / "run"))


@pytest.mark.parametrize("export_at_end, switches", [
    (False, "--config.evals.collapse.enabled=False, --config.evals.knn.enabled=False"),
    (True, "--config.eval.export_at_end=False, --config.evals.collapse.enabled=False, "
           "--config.evals.knn.enabled=False"),
])
def test_missing_eval_split_names_what_reads_it(export_at_end, switches, npz, tmp_path,
                                                  monkeypatch):
    monkeypatch.setattr(train.Run, "init_state", lambda run: pytest.fail("compiled"))
    config = tiny_config(npz=npz, **{"data.eval_split": "validation",
                                     "eval.export_at_end": export_at_end,
                                     "evals.collapse.enabled": True})
    with pytest.raises(DataError, match=rf"no split 'validation'.*turn off what reads it: "
                                        rf"{switches}\)$"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    none_read = tiny_config(npz=npz, **{"data.eval_split": "validation",
                                        "eval.export_at_end": False, "evals.knn.enabled": False,
                                        "evals.collapse.enabled": False})
    assert train.build_evaluators(train.prepare(none_read, str(tmp_path / "off"))) == {}
