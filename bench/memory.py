r"""Per-device memory of a training step under data parallel and FSDP, compile only.

    python bench/memory.py [--config=configs/simclr_resnet50.py] [--model=vit_b]
        [--batch_size=64] [--image_size=224] [--depth=0] [--smoke]

The step is built as `sslx.train` builds it (`prepare`, `make_train_step`) from
the recipe with a ViT backbone, lowered on the abstract train state and batch
(shapes and shardings only: no array is made, no step runs) and compiled; XLA's
`memory_analysis()` of the compiled, partitioned program then gives what one
device holds: arguments (train state and batch), outputs, the outputs aliased
to donated arguments (the new train state reuses the old one's buffers) and
temporaries (activations, gradients, gathered weights). Total = argument +
output - alias + temp.

The rows (`ROWS`) are the same step on the same devices with different
`config.mesh` / `config.train.param_sharding` / `config.model.remat`. Without
accelerators, run with 8 fake CPU devices (set here when XLA_FLAGS does not
already name a count). The step is traced under `jax.set_mesh(mesh)`, as the
trainer runs it: the ViT then pins its blocks' activations to the batch split
(without it the partitioner may follow FSDP's split weights and gather the
activations instead). `--smoke`: a tiny ViT at 16 px, for the test that keeps this
script working.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any, NamedTuple

if __name__ == "__main__" and "xla_force_host_platform_device_count" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Row(NamedTuple):
    """One layout of the step: its mesh, parameter placement and block remat."""

    name: str
    mesh: tuple[tuple[str, int], ...]
    param_sharding: str
    remat: bool = False


ROWS = (
    Row("data parallel", (("data", -1),), "replicated"),
    Row("fsdp (data 4, fsdp 2)", (("data", 4), ("fsdp", 2)), "fsdp"),
    Row("fsdp (data 1, fsdp 8)", (("data", 1), ("fsdp", 8)), "fsdp"),
    Row("fsdp (data 1, fsdp 8) + remat", (("data", 1), ("fsdp", 8)), "fsdp", True),
)


def recipe(path: str, *, model: str, batch_size: int, image_size: int,
           patch_size: int = 16, depth: int = 0) -> Any:
    """The recipe at `path` (its `get_config()`) with the ViT `model`, the crops
    scaled so the largest is `image_size` (the recipe's ratios kept, multiples of
    `patch_size`), float32, at `batch_size`; `depth` 0 keeps the variant's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sslx_bench_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    largest = max(group.size for group in config.views.values())
    for group in config.views.values():
        group.size = max(patch_size, round(group.size * image_size / largest / patch_size)
                         * patch_size)
    config.data.image_size = max(config.data.image_size, image_size)
    config.model.update(dict(name=model, patch_size=patch_size, depth=depth))
    config.train.update(dict(batch_size=batch_size, dtype="float32"))
    return config


def smoke_config() -> Any:
    """A 2-block ViT-T/4 on 16 px crops of the SimCLR recipe, batch 16: compiles in
    seconds, for the test that keeps this script working."""
    return recipe(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                               "simclr_resnet50.py"),
                  model="vit_t", batch_size=16, image_size=16, patch_size=4, depth=2)


def step_memory(config: Any) -> dict[str, int]:
    """Bytes per device of the compiled train step of `config` (`memory_analysis()`
    of the partitioned program), on the mesh `config.mesh` of all devices; the
    program is lowered on abstract arrays and compiled, never run. Traced under
    `jax.set_mesh(mesh)`, as the trainer runs it: there the ViT pins its blocks'
    activations to the batch split (`sslx.models.vit.batch_sharded`)."""
    import jax

    from sslx import sharding, train
    from sslx.data import pipeline

    with tempfile.TemporaryDirectory() as workdir:
        run = train.prepare(config, workdir, length=train.EMBED_ONLY)
        try:
            batch = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                               sharding=sharding.data_sharding(run.mesh)),
                pipeline.example_batch(run.spec, config.train.batch_size,
                                       inputs=run.method.inputs))
            with jax.set_mesh(run.mesh):
                lowered = train.make_train_step(run).lower(run.abstract_state, batch)
            compiled = lowered.compile()
        finally:
            run.checkpointer.close()
    stats = compiled.memory_analysis()
    sizes = {"argument": stats.argument_size_in_bytes, "output": stats.output_size_in_bytes,
             "alias": stats.alias_size_in_bytes, "temp": stats.temp_size_in_bytes}
    sizes["total"] = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
    return sizes


def memory_table(config: Any, rows: Sequence[Row] = ROWS) -> list[dict[str, Any]]:
    """`step_memory` of `config` under each row's layout."""
    results = []
    for row in rows:
        variant = config.copy_and_resolve_references()
        variant.unlock()
        variant.mesh = row.mesh
        variant.train.param_sharding = row.param_sharding
        variant.model.remat = row.remat
        variant.lock()
        results.append({"row": row.name, **step_memory(variant)})
    return results


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """The results as a Markdown table, MiB per device."""
    columns = ("argument", "output", "alias", "temp", "total")
    lines = ["| layout | " + " | ".join(f"{c} MiB" for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for result in results:
        lines.append(f"| {result['row']} | "
                     + " | ".join(f"{result[c] / 2**20:.1f}" for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/simclr_resnet50.py", help="Recipe file.")
    parser.add_argument("--model", default="vit_b", help="config.model.name (a ViT).")
    parser.add_argument("--batch_size", type=int, default=64, help="Global batch.")
    parser.add_argument("--image_size", type=int, default=224,
                        help="Side of the largest crops (the others scale with it).")
    parser.add_argument("--depth", type=int, default=0, help="ViT blocks; 0 = the variant's.")
    parser.add_argument("--smoke", action="store_true", help="A tiny ViT at 16 px (seconds).")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's INFO lines
    import jax

    if args.smoke:
        config = smoke_config()
    else:
        config = recipe(args.config, model=args.model, batch_size=args.batch_size,
                        image_size=args.image_size, depth=args.depth)
    devices = jax.devices()
    print(f"{config.method.name} {config.model.name}/{config.model.patch_size} depth "
          f"{config.model.depth or 'default'}, batch {config.train.batch_size}, crops "
          f"{[g.size for g in config.views.values()]} px, float32, {len(devices)} x "
          f"{devices[0].device_kind}; per-device bytes of the compiled step"
          )
    results = memory_table(config)
    print(json.dumps(results))
    print(format_table(results))


if __name__ == "__main__":
    main()
