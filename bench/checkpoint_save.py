r"""Seconds and bytes of one checkpoint of a recipe's full train state.

    python bench/checkpoint_save.py --config=configs/dino_vitb.py [--repeats 2]

Builds the train state as `sslx.train` does (`prepare`, `init_state`: params,
optimizer state, method state such as an EMA teacher) on all local devices, then
saves it with the trainer's `Checkpointer` into a temporary directory and waits
for the commit: `blocking_s` is what the training loop waits before its next
step (the async save's device-to-host copy), `commit_s` the time until the
checkpoint is on disk and committed. Reports the checkpoint's size on disk.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/x.py[:arg].")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Saves timed (of successive steps).")


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None:
        sys.exit("checkpoint_save.py: --config is required")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's INFO lines
    import jax

    from sslx import train
    from sslx.checkpoint import describe

    config = _CONFIG.value
    with tempfile.TemporaryDirectory() as workdir:
        run = train.prepare(config, workdir, length=train.EMBED_ONLY)
        state = jax.block_until_ready(run.init_state())
        results = []
        for step in range(1, _REPEATS.value + 1):
            start = time.perf_counter()
            run.checkpointer.save(step, state.saved_tree(), describe(config), force=True)
            blocking = time.perf_counter() - start
            run.checkpointer.wait()
            results.append({"step": step, "blocking_s": round(blocking, 2),
                            "commit_s": round(time.perf_counter() - start, 2),
                            "bytes": directory_bytes(os.path.join(run.checkpointer.directory,
                                                                  str(step)))})
        run.checkpointer.close()
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    print(json.dumps({"config": config.model.name, "params": int(num_params), "saves": results}))
    last = results[-1]
    print(f"{config.model.name}: {num_params / 1e6:.1f} M params, checkpoint "
          f"{last['bytes'] / 2**20:.0f} MiB, loop blocked {last['blocking_s']:.2f} s, "
          f"committed after {last['commit_s']:.2f} s")


if __name__ == "__main__":
    app.run(main)
