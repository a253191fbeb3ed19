r"""NNCLR, ResNet-50 on ImageNet (Dwibedi et al. 2021, "With a Little Help from My
Friends: Nearest-Neighbor Contrastive Learning of Visual Representations", Sec. 3-4
and Appendix A).

    python -m sslx.main --config=configs/nnclr_resnet50.py --workdir=gs://BUCKET/nnclr_r50

Batch 4096, 1000 epochs (the paper's headline 75.6% run), LARS (biases and BN params
excluded from weight decay and LARS adaptation), base lr 0.15 x B/256 (2.4 at 4096)
with 10 warmup epochs then cosine, wd 1e-6, temperature 0.1, support set of 98304
projections. Projector 2048-2048-256 with BN after every layer, predictor 4096-256.
BYOL's augmentations: crop 0.08-1, colour jitter (0.4, 0.4, 0.2, 0.1) p 0.8,
grayscale p 0.2, blur p 1.0 / 0.1, solarize p 0 / 0.2.

The support set starts as random unit vectors and each step enqueues the first
view's projections of the whole global batch (see sslx/methods/nnclr.py).
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with a 4096-row support set and
512/1024-wide projector/predictor hidden layers.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="nnclr")
    recipes.imagenet(config, "resnet50", batch_size=4096, epochs=1000.0)
    config.views.global_crops = recipes.byol_views(224)
    recipes.lars(config, base_lr=0.15, weight_decay=1e-6)
    return with_variant(config, arg, runlocal_overrides=recipes.nnclr_runlocal())
