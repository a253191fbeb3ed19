r"""DINO, ViT-B/16 on ImageNet (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers", Sec. 4.1 and Appendix A; Table 2's ViT-B/16 row,
400 epochs: k-NN 76.1, linear 78.2).

    python -m sslx.main --config=configs/dino_vitb.py --workdir=gs://BUCKET/dino_vitb16

As configs/dino_vits16.py (`main_dino.py` defaults: AdamW lr 0.0005 x B/256, 10 warmup
epochs, cosine to 1e-6, weight decay 0.04 -> 0.4, each gradient tensor clipped to 3.0,
drop-path 0.1, K = 65536, last layer frozen for the first epoch, teacher momentum
0.996 -> 1, teacher temperature 0.04 -> 0.07 over 30 epochs as in Appendix A;
2x224 + 10x96 crops, global scale (0.4, 1), local (0.05, 0.4)), batch 1024, 400 epochs,
but with the weight-normalised last layer kept normalised (`norm_last_layer=True`):
the README warns that removing it is only safe for ViT-S.

`:runlocal`: the same shrink as configs/dino_vits16.py.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="dino")
    recipes.dino_vit(config, "vit_b", patch_size=16, epochs=400.0)
    return with_variant(config, arg, runlocal_overrides=recipes.dino_runlocal())
