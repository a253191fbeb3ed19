r"""MoCo v3, ResNet-50 on ImageNet (Chen, Xie & He 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers", Sec. 4 and Appendix; the 100-epoch reference setup
of the official CONFIG.md / main_moco.py defaults, 68.9% linear top-1).

    python -m sslx.main --config=configs/mocov3_resnet50.py --workdir=gs://BUCKET/mocov3_r50

Batch 4096, LARS lr 0.6 x B/256, wd 1e-6 (biases and BN excluded), momentum 0.9,
10 warmup epochs, cosine, 100 epochs; temperature 1.0; key-encoder momentum 0.99 -> 1
(cosine). Projector: Dense 4096 - BN - ReLU - Dense 256 - BN (no affine), predictor:
Dense 4096 - BN - ReLU - Dense 256, all Dense bias-free. 300 epochs:
`--config.train.epochs=300 --config.optim.base_lr=0.3`; 1000 epochs additionally
`--config.optim.weight_decay=1.5e-6 --config.method.base_momentum=0.996`.
Views: BYOL's asymmetric recipe (PIL's blur p 1.0 / 0.1, solarize p 0.0 / 0.2, colour jitter
(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2) with crop scale 0.2-1 (`--crop-min=.2`).
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="mocov3")
    recipes.imagenet(config, "resnet50", batch_size=4096, epochs=100.0)
    config.views.global_crops = recipes.byol_views(
        224, crop_scale=(0.2, 1.0), crop_resize="bilinear", blur_kernel="three_sigma")
    recipes.lars(config, base_lr=0.6, weight_decay=1e-6)
    return with_variant(config, arg, runlocal_overrides=recipes.predictor_runlocal())
