r"""DINO, ViT-S/16 on ImageNet: the paper's best ViT-S/16 recipe (Caron et al. 2021,
"Emerging Properties in Self-Supervised Vision Transformers", Sec. 4.1 and Appendix A;
Table 2's DeiT-S/16 row, 800 epochs: k-NN 74.5, linear 77.0).

    python -m sslx.main --config=configs/dino_vits16.py --workdir=gs://BUCKET/dino_vits16

`main_dino.py`'s defaults with the README's "Boosting DINO performance" flags for
DeiT-S (`--teacher_temp 0.07 --warmup_teacher_temp_epochs 30 --norm_last_layer false`),
800 epochs and 10 local crops (the paper's 2x224 + 10x96 multi-crop):
batch 1024 (16 GPUs x 64), AdamW lr 0.0005 x B/256 with 10 warmup epochs and a cosine to
1e-6, weight decay cosine 0.04 -> 0.4 (not on biases and norms), each gradient
tensor's norm clipped to 3.0, drop-path 0.1,
head 2048-2048-256 -> K = 65536 with its last layer frozen for the first epoch, teacher
momentum 0.996 -> 1, student temperature 0.1, teacher 0.04 -> 0.07 over 30 epochs,
center momentum 0.9. Global crops 224 px, scale (0.4, 1), blur p 1.0 / 0.1, solarize
p 0 / 0.2; local crops 96 px, scale (0.05, 0.4), blur p 0.5; colour jitter
(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2 on all; crops resized bicubically, PIL's
blur. The teacher temperature changes once per epoch.

`:runlocal` trains a 4-block ViT-T/4 on Fashion-MNIST (2x28 + 4x12 px crops, head
512-512-128 -> 1024) with the same recipe for 70 steps of 128 (see `sslx.recipes.dino_runlocal`).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="dino")
    recipes.dino_vit(config, "vit_s", patch_size=16, epochs=800.0)
    config.method.norm_last_layer = False
    return with_variant(config, arg, runlocal_overrides=recipes.dino_runlocal())
