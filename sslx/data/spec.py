"""The input spec: what a run's batches hold, parsed once from the config.

`config.views` (and `config.masks`) are read here and nowhere else: the
trainer parses them once in `prepare`, and the method, the pipeline and the
evaluators receive the resulting `InputSpec`, so none re-derives crop sizes or
counts views by hand.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from sslx.data.augment import ViewSpec
from sslx.data.device_augment import AUGMENT_ON, after_crop
from sslx.data.masks import MaskLayout, mask_layout
from sslx.data.views import view_specs
from sslx.errors import ConfigError, close_matches


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """`crops`: one `ViewSpec` per view, in batch order (largest group first);
    `global_count`: how many leading crops belong to the largest group (the
    crops a multi-crop teacher sees and masked-image methods mask);
    `image_size`: the side of the largest crop, a ViT's native resolution;
    `eval_size`: the side images are embedded at for evaluation and export;
    `masks`: the mask layout when the config asks for masks, else None;
    `batch_size`: the global batch size (queues must hold at least one batch);
    `augment_on`: "host" (views arrive augmented, float32) or "device" (views
    arrive cropped, uint8, and the train step augments them:
    `sslx.data.device_augment`); `mean`, `std`: the per-channel normalisation of
    the views, wherever they are finished."""

    crops: tuple[ViewSpec, ...]
    global_count: int
    image_size: int
    eval_size: int
    masks: MaskLayout | None
    batch_size: int
    augment_on: str = "host"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    @property
    def num_views(self) -> int:
        return len(self.crops)


def input_spec(config: ml_collections.ConfigDict) -> InputSpec:
    """The validated spec of `config`; `ConfigError` names a bad view or mask field."""
    crops = view_specs(config.views)
    size = crops[0].size
    global_count = sum(crop.group == crops[0].group for crop in crops)
    augment_on = config.data.augment_on
    if augment_on not in AUGMENT_ON:
        raise ConfigError(f"config.data.augment_on={augment_on!r} is not one of "
                          f"{', '.join(AUGMENT_ON)}{close_matches(str(augment_on), AUGMENT_ON)}")
    if augment_on == "device":
        after_crop()  # every op after the crop has a device twin
    masks = None
    if "masks" in config:
        masks = mask_layout(config.masks, size=size, count=global_count,
                            patch_size=config.model.patch_size)
    return InputSpec(
        crops=crops,
        global_count=global_count,
        image_size=size,
        eval_size=size,
        masks=masks,
        batch_size=config.train.batch_size,
        augment_on=augment_on,
        mean=tuple(config.data.mean),
        std=tuple(config.data.std),
    )
