"""Metric writers: what lands in metrics.jsonl and TensorBoard, only from process 0,
and a workdir that cannot be written is one clear error."""

from __future__ import annotations

import glob
import json
import os
from unittest import mock

import jax
import pytest
import tensorflow as tf

from sslx import metrics
from sslx.errors import SslxError


def _tensorboard_scalars(directory: str) -> dict[tuple[str, int], float]:
    scalars = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars[value.tag, event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def test_scalars_go_to_jsonl_and_tensorboard(tmp_path):
    writer = metrics.MetricWriter(str(tmp_path))
    writer.write(1, {"loss": 2.5, "lr": jax.numpy.float32(0.1)})
    writer.write(2, {"loss": 1.5})
    writer.close()
    with open(tmp_path / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert lines == [{"step": 1, "loss": 2.5, "lr": pytest.approx(0.1)},
                     {"step": 2, "loss": 1.5}]
    assert _tensorboard_scalars(str(tmp_path / "tensorboard")) == {
        ("loss", 1): 2.5, ("lr", 1): pytest.approx(0.1), ("loss", 2): 1.5}


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    writer = metrics.MetricWriter(str(tmp_path / "run"))
    assert writer.write(1, {"loss": 2.0}) == {"loss": 2.0}
    writer.close()
    assert not os.path.exists(tmp_path / "run")


def test_unwritable_workdir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SslxError, match=r"a_file/run.*--workdir"):
        metrics.MetricWriter(str(blocker / "run"))


def test_throughput_counts_images_per_second_and_the_share_spent_waiting_for_input():
    clock = iter([100.0, 110.0, 114.0])  # start, first log point, second log point
    with mock.patch.object(metrics.time, "perf_counter", lambda: next(clock)):
        throughput = metrics.Throughput(batch_size=8)
        throughput.start(step=1)
        throughput.waited(2.5)
        throughput.waited(0.5)
        first = throughput.measure(step=6)  # 5 steps in 10 s, 3 s of them waiting
        second = throughput.measure(step=8)  # 2 steps in 4 s, no wait
    want_first = {"images_per_sec": 4.0, "step_time": 2.0, "input_wait": 0.3}
    want_second = {**want_first, "input_wait": 0.0}
    assert first == pytest.approx(want_first)
    assert second == pytest.approx(want_second)
