"""Command line: flags -> config -> train / export.

    python -m sslx.main --config=configs/simclr_fmnist.py --workdir=/tmp/run
    python -m sslx.main --config=configs/simclr_resnet50.py:runlocal --workdir=/tmp/r \\
        --config.train.batch_size=128
    python -m sslx.main --mode=evaluate --workdir=/tmp/run --evals=knn,linear_probe
    python -m sslx.main --mode=export --workdir=/tmp/run --split=train
    python -m sslx.main --mode=print_config --workdir=/tmp/run

Re-running the same command on the same workdir resumes from its latest checkpoint.
Without `--config`, a workdir's own saved config (`WORKDIR/config.json`) is used,
with any `--config.a.b=v` overrides applied to it.
"""

from __future__ import annotations

import os
import re
import sys

# Before TensorFlow is first imported: its INFO lines are not the run's. TensorFlow
# only runs the input pipeline here, so its oneDNN model kernels (whose start-up
# notice TF_CPP_MIN_LOG_LEVEL no longer hides) are left off.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags
from ml_collections import config_flags

from sslx import saved_config

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe file, e.g. configs/simclr_fmnist.py[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (or gs:// path) for checkpoints, "
                               "metrics and embeddings.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "export", "export_backbone",
                                           "print_config"],
                          "train: train (or resume), then k-NN and embeddings; "
                          "evaluate: the evaluators of --evals on the latest checkpoint; "
                          "export: embeddings of --split from the latest checkpoint; "
                          "export_backbone: the backbone's weights as WORKDIR/backbone.msgpack; "
                          "print_config: the resolved config, without running anything.")
_EVALS = flags.DEFINE_list("evals", None, "--mode=evaluate: names in config.evals (or "
                           "evaluator types) to run, e.g. knn,linear_probe,low_label; "
                           "default: the enabled ones.")
_SPLIT = flags.DEFINE_string("split", None, "Split to export (default config.eval.export_split).")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "jax.distributed.initialize(): auto = when the environment "
                                 "(SLURM, Open MPI, JAX_COORDINATOR_ADDRESS) or a Cloud "
                                 "TPU VM's metadata names a multi-process cluster.")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config mistakes reported as one line, not a traceback.

    Without `--config`, the saved config of `--workdir` stands in for it, so
    `--config.a.b=v` overrides apply to what that run was trained with."""
    argv = _with_saved_config(argv)
    sys.argv = argv  # config_flags finds the `--config.*` overrides there
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
        # A recipe's own error comes wrapped in a traceback: keep its last line.
        message = re.sub(r"Error whilst parsing config file:.*\n\w+: ", "", str(error),
                         flags=re.DOTALL)
        message = " ".join(message.replace("\\n", " ").replace("\\'", "'").split())
        if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
            message = message[1:-1]  # KeyError quotes its whole message
        sys.exit(f"sslx: bad command line: {message}\n"
                 "Pass --helpfull for the flags; config keys are those of the --config file.")


def _with_saved_config(argv: list[str]) -> list[str]:
    """`argv` with `--config=<saved_config.py>:WORKDIR` after the program name when
    it names no `--config` and WORKDIR holds a saved config."""
    if any(re.match(r"^--?config(=|$)", arg) for arg in argv):
        return argv
    workdirs = [m.group(1) for arg in argv if (m := re.match(r"^--?workdir=(.+)$", arg))]
    if not workdirs:
        return argv
    from sslx import fs

    if not fs.exists(saved_config.path(workdirs[-1])):
        return argv
    return [argv[0], f"--config={saved_config.__file__}:{workdirs[-1]}", *argv[1:]]


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None:
        where = f": {_WORKDIR.value} holds no saved run" if _WORKDIR.value else ""
        sys.exit(f"sslx: --config=configs/RECIPE.py is required{where}")
    if _EVALS.value is not None and _MODE.value != "evaluate":
        sys.exit("sslx: --evals is read by --mode=evaluate only; drop it, or add "
                 "--mode=evaluate (training runs the enabled config.evals)")
    if _WORKDIR.value is None and _MODE.value != "print_config":
        sys.exit("sslx: --workdir is required (a local or gs:// directory for the run)")
    config = _CONFIG.value
    if _MODE.value == "print_config":
        print(saved_config.to_json(config), end="")
        return
    from sslx import distributed
    from sslx.errors import SslxError

    distributed.maybe_initialize_distributed(_DISTRIBUTED.value)
    from sslx import api

    api.setup_process()  # logging, and TensorFlow kept off the accelerators (as sslx.fit)
    try:
        results = _run(_MODE.value, config, _WORKDIR.value)
    except (SslxError, FloatingPointError) as error:
        sys.exit(f"sslx: {error}")
    _report(results)


def _run(mode: str, config, workdir: str) -> dict:
    from sslx import api, fs, train

    if mode == "export":
        return train.export(config, workdir, _SPLIT.value or config.eval.export_split)
    if mode == "evaluate":
        return train.evaluate(config, workdir, _EVALS.value)
    if mode == "export_backbone":
        path = api.load(workdir, config).export_backbone(fs.join(workdir, api.BACKBONE_FILE))
        return {"backbone": path}
    return train.train_and_evaluate(config, workdir)


def _report(results: dict) -> None:
    knn = sorted((int(k.rsplit("k", 1)[1]), v) for k, v in results.items()
                 if k.startswith("knn_top1_k"))
    if knn:
        others = ", ".join(f"k={k}: {v:.4f}" for k, v in knn[1:])
        print(f"k-NN top-1: {knn[0][1]:.4f} (k={knn[0][0]}{'; ' + others if others else ''})")
    if "classifier_top1" in results:
        print(f"classifier top-1: {results['classifier_top1']:.4f}")
    for name, metrics in results.get("evals", {}).items():
        for metric, value in metrics.items():
            print(f"{name} {metric}: {value:.4f}")
        if not metrics:
            print(f"{name}: no figures (its log line says why, or what it wrote)")
    if "evals_file" in results:
        print(f"evals: {results['evals_file']}")
    for name, path in results.get("embeddings", {}).items():
        print(f"embeddings {name}: {path}")
    if "backbone" in results:
        print(f"backbone: {results['backbone']}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
