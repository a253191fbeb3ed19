r"""DINO, ViT-S/8 on ImageNet (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers", Sec. 4.1 and Appendix A; Table 2's DeiT-S/8 row,
800 epochs: k-NN 78.3, linear 79.7).

    python -m sslx.main --config=configs/dino_vits8.py --workdir=gs://BUCKET/dino_vits8

The ViT-S/16 recipe of configs/dino_vits16.py (batch 1024, 800 epochs, AdamW lr
0.0005 x B/256, weight decay 0.04 -> 0.4, teacher temperature 0.04 -> 0.07 over 30
epochs, `norm_last_layer=False`, 2x224 + 10x96 crops) with 8x8 patches: 784 tokens per
global crop and 144 per local crop, about 4x the compute of ViT-S/16 per image.

`:runlocal`: the same shrink as configs/dino_vits16.py (patches of 4 px).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="dino")
    recipes.dino_vit(config, "vit_s", patch_size=8, epochs=800.0)
    config.method.norm_last_layer = False
    return with_variant(config, arg, runlocal_overrides=recipes.dino_runlocal())
