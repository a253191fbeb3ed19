r"""MoCo v3, ViT-B/16 on ImageNet (Chen, Xie & He 2021, Sec. 4-5 and Appendix; the
official CONFIG.md ViT-Base setup, 300 epochs, 76.7% linear top-1).

    python -m sslx.main --config=configs/mocov3_vitb.py --workdir=gs://BUCKET/mocov3_vitb

The ViT-S recipe (configs/mocov3_vits.py) with a ViT-B/16: batch 4096, AdamW lr
1.5e-4 x B/256, wd 0.1, 40 warmup epochs, 300 epochs, temperature 0.2, momentum
0.99 -> 1, sin-cos position embedding, frozen random patch projection.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx import recipes


def get_config(arg=None):
    return recipes.sibling_recipe(__file__, "mocov3_vits.py").get_config(arg, model="vit_b")
