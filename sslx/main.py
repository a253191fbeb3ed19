"""Command line: flags -> config -> train / export.

    python -m sslx.main --config=configs/simclr_fmnist.py --workdir=/tmp/run
    python -m sslx.main --config=configs/simclr_resnet50.py:runlocal --workdir=/tmp/r \\
        --config.train.batch_size=128
    python -m sslx.main --mode=export --config=configs/simclr_fmnist.py --workdir=/tmp/run

Re-running the same command on the same workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe file, e.g. configs/simclr_fmnist.py[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (or gs:// path) for checkpoints, "
                               "metrics and embeddings.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "export"],
                          "train: train (or resume), then k-NN and embeddings; "
                          "export: embeddings of --split from the latest checkpoint.")
_SPLIT = flags.DEFINE_string("split", None, "Split to export (default config.eval.export_split).")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "jax.distributed.initialize(): auto = when the environment "
                                 "names a multi-process cluster.")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config mistakes reported as one line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        message = str(error).strip().strip("'\"").replace("\\n", " ").replace("\\'", "'")
        sys.exit(f"sslx: bad command line: {message}\n"
                 "Pass --helpfull for the flags; config keys are those of the --config file.")


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None or _WORKDIR.value is None:
        sys.exit("sslx: --config and --workdir are required")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("sslx").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sslx import sharding, train
    from sslx.errors import SslxError

    sharding.maybe_initialize_distributed(_DISTRIBUTED.value)
    config = _CONFIG.value
    try:
        if _MODE.value == "export":
            results = train.export(config, _WORKDIR.value,
                                   _SPLIT.value or config.eval.export_split)
        else:
            results = train.train_and_evaluate(config, _WORKDIR.value)
    except SslxError as error:
        sys.exit(f"sslx: {error}")
    _report(results)


def _report(results: dict) -> None:
    knn = sorted((int(k.rsplit("k", 1)[1]), v) for k, v in results.items()
                 if k.startswith("knn_top1_k"))
    if knn:
        others = ", ".join(f"k={k}: {v:.4f}" for k, v in knn[1:])
        print(f"k-NN top-1: {knn[0][1]:.4f} (k={knn[0][0]}{'; ' + others if others else ''})")
    for name, path in results.get("embeddings", {}).items():
        print(f"embeddings {name}: {path}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
