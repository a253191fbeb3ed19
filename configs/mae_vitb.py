r"""MAE, ViT-B/16 on ImageNet: the paper's 1600-epoch recipe (He et al. 2022, "Masked
Autoencoders Are Scalable Vision Learners", Table 4 and Appendix A.1; 83.6 fine-tuned,
68.0 linear top-1), the official `main_pretrain.py` with PRETRAIN.md's flags
`--model mae_vit_base_patch16 --norm_pix_loss --mask_ratio 0.75 --epochs 1600
--warmup_epochs 40 --blr 1.5e-4 --weight_decay 0.05` at batch 4096.

    python -m sslx.main --config=configs/mae_vitb.py --workdir=gs://BUCKET/mae_vitb

75% of each image's patches masked at random, the encoder on the other 25%, a
decoder of 8 blocks 512 wide with 16 heads, the MSE on masked patches against
per-patch normalised pixels; AdamW betas (0.9, 0.95), lr 1.5e-4 x B/256, 40 warmup
epochs, cosine to 0, weight decay 0.05; random resized crop 0.2-1 (bicubic) and a
flip, nothing else (see `sslx.recipes.mae_vit`). The reconstruction picture is
written into WORKDIR/plots/ at the end. `:runlocal` trains a 4-block ViT-T/4 with a
2-block decoder on Fashion-MNIST for an epoch (`sslx.recipes.mae_runlocal`).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None, model="vit_b"):
    config = base_config(method="mae")
    recipes.mae_vit(config, model, epochs=1600.0)
    return with_variant(config, arg, runlocal_overrides=recipes.mae_runlocal())
