"""What a training example holds, made by named producers a method asks for.

A method lists the inputs it reads (`Method.inputs`: `("views", "label")` by
default, iBOT adds "masks"); the pipeline runs the producer of each name on every
example and merges what they return into the example. A producer is a function

    (example, seed, spec, config) -> {key: tf.Tensor or tuple of them}

of one source example (`{'image': uint8 [H, W, 3], 'label': int32}`, see
`sslx.data.sources`), its seed (int64 [2]), the run's `InputSpec` and config;
it is made of stateless TF ops, so it runs inside `tf.data.Dataset.map` and the
same seed gives the same output. Its registration also declares what it returns
(`outputs(spec) -> {key: tf.TensorSpec or tuple of them}`), so the structure
of a batch is known without building the augmentation graph; the pipeline checks
the declaration against what the producer makes on every run. An input a new
method needs (rotation labels, jigsaw permutations) is one more
`@producer(name, stream=..., outputs=...)` function: the pipeline,
`example_batch` and the trainer follow from the method's `inputs`.

Each producer draws from its own stream of the example's seed,
`tf.random.fold_in(seed, stream)`, so adding or removing one leaves the others'
outputs unchanged; "views" (`stream=None`) takes the example's seed as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ml_collections
import tensorflow as tf

from sslx.data.masks import MaskLayout, make_masks
from sslx.data.views import make_crops, make_views
from sslx.errors import ConfigError, close_matches

if TYPE_CHECKING:
    from sslx.data.spec import InputSpec

Example = dict[str, tf.Tensor]
ProducerFn = Callable[[Example, tf.Tensor, "InputSpec", ml_collections.ConfigDict],
                      dict[str, Any]]
OutputsFn = Callable[["InputSpec"], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Producer:
    fn: ProducerFn
    stream: int | None  # folded into the example's seed; None: the seed itself
    outputs: OutputsFn  # the TensorSpecs of what `fn` returns, per example


_REGISTRY: dict[str, Producer] = {}


def producer(name: str, *, stream: int | None, outputs: OutputsFn):
    """Registers `fn(example, seed, spec, config) -> dict` as the producer of input
    `name`, seeded by its own `stream` of the example's seed (an int no other
    producer uses); `outputs(spec)` gives the `tf.TensorSpec`s of what it returns."""

    def add(fn: ProducerFn) -> ProducerFn:
        if name in _REGISTRY:
            raise ValueError(f"producer {name!r} is registered twice")
        for other, registered in _REGISTRY.items():
            if registered.stream == stream:
                raise ValueError(f"producer {name!r}: stream {stream} is {other!r}'s")
        _REGISTRY[name] = Producer(fn, stream, outputs)
        return fn

    return add


def names() -> list[str]:
    """Every registered input name."""
    return sorted(_REGISTRY)


def check(inputs: Sequence[str]) -> None:
    """`ConfigError` for an input no producer makes."""
    for name in inputs:
        if name not in _REGISTRY:
            raise ConfigError(f"no producer makes the input {name!r}"
                              f"{close_matches(name, _REGISTRY)}; registered: "
                              f"{', '.join(names())} (sslx/data/producers.py)")


def element_spec(inputs: Sequence[str], spec: InputSpec) -> dict[str, Any]:
    """The declared `tf.TensorSpec`s of one training example holding `inputs`."""
    check(inputs)
    return {key: value for name in inputs for key, value in _REGISTRY[name].outputs(spec).items()}


def produce(inputs: Sequence[str], example: Example, seed: tf.Tensor, spec: InputSpec,
            config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The training example: the outputs of the producers of `inputs`, merged."""
    check(inputs)
    out: dict[str, Any] = {}
    for name in inputs:
        registered = _REGISTRY[name]
        own_seed = seed if registered.stream is None else tf.random.fold_in(seed,
                                                                            registered.stream)
        made = registered.fn(example, own_seed, spec, config)
        clash = sorted(set(made) & set(out))
        if clash:
            raise ValueError(f"producer {name!r} makes {clash[0]!r}, which another input "
                             "already made")
        out.update(made)
    return out


def _views_outputs(spec: InputSpec) -> dict[str, Any]:
    dtype = tf.uint8 if spec.augment_on == "device" else tf.float32
    return {"views": tuple(tf.TensorSpec([crop.size, crop.size, 3], dtype)
                           for crop in spec.crops)}


@producer("views", stream=None, outputs=_views_outputs)
def _views(example: Example, seed: tf.Tensor, spec: InputSpec,
           config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`{'views': (float32 [size, size, 3] per crop of `spec.crops`)}`, normalised;
    with device augmentation, the uint8 crops the train step augments."""
    del config  # the normalisation is the spec's
    if spec.augment_on == "device":
        return {"views": make_crops(example["image"], seed, spec.crops)}
    return {"views": make_views(example["image"], seed, spec.crops, spec.mean, spec.std)}


@producer("label", stream=1, outputs=lambda spec: {"label": tf.TensorSpec([], tf.int32)})
def _label(example: Example, seed: tf.Tensor, spec: InputSpec,
           config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`{'label': int32}`, -1 where the split is unlabelled."""
    del seed, spec, config
    return {"label": example["label"]}


def _mask_layout(spec: InputSpec) -> MaskLayout:
    """The run's mask layout; `ConfigError` when the config asks for no masks."""
    if spec.masks is None:
        raise ConfigError("the method reads masks, but the config has no config.masks: set "
                          "config.masks = sslx.data.masks.mask_config(...) in the recipe")
    return spec.masks


def _mask_outputs(spec: InputSpec) -> dict[str, Any]:
    layout = _mask_layout(spec)
    return {"masks": (tf.TensorSpec([layout.num_patches], tf.bool),) * layout.count}


@producer("masks", stream=1_000_003, outputs=_mask_outputs)
def _masks(example: Example, seed: tf.Tensor, spec: InputSpec,
           config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`{'masks': (bool [patches] per global crop)}`, see `sslx.data.masks`."""
    del example
    return {"masks": make_masks(seed, _mask_layout(spec), config.masks)}


# The producers of the pretext tasks and of colorization, registered on import.
from sslx.data import color, pretext  # noqa: E402, F401
