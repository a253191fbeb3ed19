r"""MAE, ViT-L/16 on ImageNet: the paper's 1600-epoch ViT-L recipe (He et al. 2022,
Table 4 and Appendix A.1; 85.9 fine-tuned, 75.8 linear top-1), PRETRAIN.md's
`--model mae_vit_large_patch16` run: configs/mae_vitb.py with a ViT-L/16 encoder
(24 blocks, 1024 wide, 16 heads) and the same 8-block, 512-wide decoder.

    python -m sslx.main --config=configs/mae_vitl.py --workdir=gs://BUCKET/mae_vitl

`:runlocal` is configs/mae_vitb.py's (a ViT-T/4 on Fashion-MNIST).
"""

from sslx import recipes


def get_config(arg=None):
    return recipes.sibling_recipe(__file__, "mae_vitb.py").get_config(arg, model="vit_l")
