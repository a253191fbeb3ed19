r"""BYOL, ResNet-18 with the CIFAR stem on CIFAR-10. The BYOL paper has no CIFAR
pre-training recipe; these are solo-learn's (da Costa et al. 2022,
scripts/pretrain/cifar/byol.yaml with augmentations/asymmetric.yaml), ~92.6% linear.

    python -m sslx.main --config=configs/byol_resnet18_cifar10.py --workdir=/tmp/byol_c10

Batch 256, LARS lr 1.0 x B/256, wd 1e-5 (biases and BN excluded), 10 warmup epochs,
cosine, 1000 epochs; heads 4096-256 / 4096-256; tau 0.99 -> 1 (cosine). Views: crop
0.08-1, colour jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2, no blur, solarize
p 0.0 / 0.2. Not reproducible here: solo-learn's LARS uses trust coefficient 0.02 with
lr clipping, sslx's LARS the 1e-3 of SimCLR/BYOL.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="byol")
    recipes.cifar10(config)
    config.views.global_crops = recipes.byol_views(32, blur_prob=0.0)
    config.method.base_momentum = 0.99
    recipes.lars(config, base_lr=1.0, weight_decay=1e-5)
    return with_variant(config, arg, runlocal_overrides=recipes.predictor_runlocal())
