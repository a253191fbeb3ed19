r"""Supervised ViT-S/16 on ImageNet: DeiT-S (Touvron et al. 2021, Table 9; official
facebookresearch/deit `main.py` defaults), the baseline of the ViT recipes.

    python -m sslx.main --config=configs/supervised_vits16.py --workdir=gs://BUCKET/sup_vits16

Batch 1024, AdamW lr 5e-4 x B/512 (2.5e-4 x B/256), weight decay 0.05 (not on
biases and norms), 5 warmup epochs then a cosine to 1e-5, 300 epochs, drop-path
0.1, label smoothing 0.1, mixup 0.8 and CutMix 1.0 (one or the other per batch).
RandAugment, random erasing and repeated augmentation are not offered (see
docs/RECIPES.md).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="supervised")
    recipes.vit_supervised(config, "vit_s", epochs=300.0, base_lr=2.5e-4, min_lr=1e-5)
    return with_variant(config, arg, runlocal_overrides={"method.num_classes": 10})
