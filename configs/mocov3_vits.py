r"""MoCo v3, ViT-S/16 on ImageNet (Chen, Xie & He 2021, Sec. 4-5 and Appendix; the
official CONFIG.md ViT-Small setup, 300 epochs, 73.2% linear top-1).

    python -m sslx.main --config=configs/mocov3_vits.py --workdir=gs://BUCKET/mocov3_vits

Batch 4096, AdamW lr 1.5e-4 x B/256, betas (0.9, 0.999), wd 0.1 on every parameter
(torch AdamW over all params), 40 warmup epochs, cosine, 300 epochs; temperature 0.2;
key-encoder momentum 0.99 -> 1 (cosine). Fixed 2-D sin-cos position embedding and a
frozen random patch projection (Sec. 5, "stop-grad-conv1"). Projector: 3 Dense layers
4096-4096-256, BN after each (the last without affine); predictor Dense 4096 - BN - ReLU -
Dense 256 - BN (no affine); all Dense bias-free. Views: BYOL's asymmetric recipe with
crop scale 0.08-1. The ViT as `vits.py` builds it: 12 attention heads (DeiT's ViT-S
has 6), Xavier-uniform Linears (q, k, v each its own matrix), class token N(0, 1e-6^2).
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None, model: str = "vit_s"):
    config = base_config(method="mocov3")
    recipes.imagenet(config, model, batch_size=4096, epochs=300.0)
    config.views.global_crops = recipes.byol_views(224, crop_resize="bilinear",
                                                  blur_kernel="three_sigma")
    config.model.patch_size = 16
    config.model.pos_embedding = "sincos"
    config.model.num_heads = 12
    config.model.vit_init = "xavier"
    config.method.temperature = 0.2
    config.method.projector_layers = 3
    config.method.predictor_output_norm = True

    config.optim.name = "adamw"
    config.optim.base_lr = 1.5e-4
    config.optim.lr_scaling = "linear"
    config.optim.warmup_epochs = 40.0
    config.optim.weight_decay = 0.1
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.exclude_bias_and_norm = False
    # Random patch projection, frozen for the whole run (1e9 epochs): MoCo v3's fix for
    # the training instability of ViTs (Sec. 5).
    config.optim.frozen.patch_embed = 1e9
    return with_variant(config, arg, runlocal_overrides=recipes.predictor_runlocal())
