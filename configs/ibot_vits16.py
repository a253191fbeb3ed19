r"""iBOT, ViT-S/16 on ImageNet (Zhou et al. 2022, "iBOT: Image BERT Pre-Training with
Online Tokenizer", Sec. 3-4 and Appendix A; the README's 800-epoch ViT-S/16 run:
k-NN 75.2, linear 77.9).

    python -m sslx.main --config=configs/ibot_vits16.py --workdir=gs://BUCKET/ibot_vits16

The README's command (`--teacher_temp 0.07 --warmup_teacher_temp_epochs 30
--norm_last_layer false --epochs 800 --batch_size_per_gpu 64` on 16 GPUs
`--shared_head true --out_dim 8192 --local_crops_number 10 --global_crops_scale 0.25 1
--local_crops_scale 0.05 0.25 --pred_ratio 0 0.3 --pred_ratio_var 0 0.2`) on
`main_ibot.py`'s defaults: batch 1024, AdamW lr 0.0005 x B/256, 10 warmup epochs,
cosine to 1e-6, weight decay 0.04 -> 0.4, each gradient tensor clipped to 3.0, drop-path
0.1, one head for [CLS] and patches (2048-2048-256 -> K = 8192, last layer frozen for
the first epoch), teacher momentum 0.996 -> 1, teacher temperatures 0.04 -> 0.07 over
30 epochs for [CLS] and patches, loss weights 1 and 1, center momentum 0.9. Masks:
blockwise (BEiT), per image and global crop none with probability 0.5, else a ratio
r ~ U(0.1, 0.5), block aspect ratios in (0.3, 1/0.3), from the first epoch.

`:runlocal`: a 4-block ViT-T/4 on Fashion-MNIST (2x28 px crops, 7x7 patches, masked as
above, + 4x12 px crops; head 512-512-128 -> 1024) for 70 steps of 128
(see `sslx.recipes.dino_runlocal`).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant
from sslx.data.masks import mask_config


def get_config(arg=None):
    config = base_config(method="ibot")
    recipes.dino_vit(config, "vit_s", patch_size=16, epochs=800.0)
    config.views = recipes.dino_views(local_count=10, global_scale=(0.25, 1.0),
                                      local_scale=(0.05, 0.25))
    config.masks = mask_config(prob=0.5, ratio=(0.1, 0.5), aspect=(0.3, 1 / 0.3))
    return with_variant(config, arg, runlocal_overrides=recipes.dino_runlocal())
