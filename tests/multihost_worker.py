"""One process of the multi-host check (`test_multihost.py`), in a process of its own
because tests/conftest.py fixes the test process at 8 CPU devices and one jax process.

    python tests/multihost_worker.py SPEC.json

SPEC holds `recipe` and `overrides` (for `helpers.tiny_config`), `workdir` and `out`
(a folder for what this process reports), and either `process_id`,
`num_processes` and `port` (one host of a `jax.distributed` run on loopback) or
none of them: the single-process reference, which trains on the very global batches
the hosts assemble (`_both_hosts`), so its losses and parameters are what the hosts'
must equal.

Writes `out/process_<i>.json`: the example indices of the first batch this process
trained on (the npz's train labels are the example indices), the files it opened for
writing, and the step it ended at; process 0 (and the reference) also writes
`out/params.pkl`, the final parameters gathered from every host."""

from __future__ import annotations

import faulthandler
import json
import os
import pickle
import signal
import sys
from unittest import mock

import jax
import numpy as np


def main(spec_path: str) -> None:
    # A hung process shows where it waits: the test sends SIGUSR1 before it kills.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    with open(spec_path) as f:
        spec = json.load(f)
    distributed = "process_id" in spec
    if distributed:
        # CPU devices of several processes talk through gloo; the default is none.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{spec['port']}",
                                   num_processes=spec["num_processes"],
                                   process_id=spec["process_id"],
                                   initialization_timeout=120)
    # Imported once the processes have joined: nothing may start a jax backend before.
    import helpers
    from jax.experimental import multihost_utils

    from sslx import fs, train
    from sslx.data import pipeline

    config = helpers.tiny_config(spec["recipe"], **spec["overrides"])
    first_labels: list[list[int]] = []
    written: list[str] = []
    stream = pipeline.train_iterator

    def labelled(config, spec, *, inputs, **kwargs):
        """The run's own stream of batches, with labels added to see which examples
        its first batch holds; the label producer has a seed stream of its own, so
        adding it changes no view."""
        with_label = (*inputs, "label") if "label" not in inputs else tuple(inputs)
        return stream(config, spec, inputs=with_label, **kwargs), "label" in inputs

    def recording(config, spec, *, inputs, **kwargs):
        if distributed:
            batches, keep = labelled(config, spec, inputs=inputs, **kwargs)
        else:
            batches, keep = _both_hosts(labelled, config, spec, inputs=inputs, **kwargs)
        for batch in batches:
            if not first_labels:
                first_labels.append([int(label) for label in batch["label"]])
            yield batch if keep else {k: v for k, v in batch.items() if k != "label"}

    opened = fs.open_file

    def open_file(path: str, mode: str = "r"):
        if "w" in mode or "a" in mode:
            written.append(os.path.relpath(path, spec["workdir"]))
        return opened(path, mode)

    with (mock.patch.object(pipeline, "train_iterator", recording),
          mock.patch.object(fs, "open_file", open_file)):
        results = train.train_and_evaluate(config, spec["workdir"])
        if distributed:
            # The state after the run: the hosts restore the checkpoint it ended with
            # (every host takes part), and the params are gathered whole from both.
            state = train.prepare(config, spec["workdir"]).restore_state()
            params = multihost_utils.process_allgather(state.params, tiled=True)
        else:
            params = jax.device_get(train.prepare(config, spec["workdir"]).restore_state().params)
    index = jax.process_index()
    report = {"process_index": index, "process_count": jax.process_count(),
              "local_devices": jax.local_device_count(), "devices": jax.device_count(),
              "first_labels": first_labels[0] if first_labels else None,
              "written": written, "step": results["step"],
              "embeddings": results.get("embeddings", {})}
    with open(os.path.join(spec["out"], f"process_{index}.json"), "w") as f:
        json.dump(report, f)
    if index == 0:
        with open(os.path.join(spec["out"], "params.pkl"), "wb") as f:
            pickle.dump(jax.tree.map(np.asarray, params), f)
    if distributed:
        jax.distributed.shutdown()


def _both_hosts(labelled, config, spec, *, inputs, process_index=None, process_count=None,
                **kwargs):
    """The global batches of a 2-host run in one process: host 0's local batch, then
    host 1's, each host's stream as that host makes it (its own shard, shuffle and
    augmentation seeds). The hosts place their rows on the mesh in process order, so
    this is the global batch they assemble."""
    streams = [labelled(config, spec, inputs=inputs, process_index=host, process_count=2,
                        **kwargs) for host in range(2)]

    def concatenated():
        for pair in zip(*(batches for batches, _ in streams), strict=True):
            yield jax.tree.map(lambda *leaves: np.concatenate(leaves), *pair)

    return concatenated(), streams[0][1]


if __name__ == "__main__":
    main(sys.argv[1])
