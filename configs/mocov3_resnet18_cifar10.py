r"""MoCo v3, ResNet-18 with the CIFAR stem on CIFAR-10. The MoCo v3 paper has no CIFAR
recipe; these are solo-learn's (da Costa et al. 2022, scripts/pretrain/cifar/mocov3.yaml
with augmentations/asymmetric.yaml), ~93% linear.

    python -m sslx.main --config=configs/mocov3_resnet18_cifar10.py --workdir=/tmp/mocov3_c10

Batch 256, LARS lr 0.3 x B/256, wd 1e-6 (biases and BN excluded), 10 warmup epochs,
cosine, 1000 epochs; temperature 0.2; momentum 0.99 -> 1 (cosine); heads as MoCo v3's
ResNet ones (4096 hidden, 256 out). Views: crop 0.08-1, colour jitter (0.4, 0.4, 0.2, 0.1)
p 0.8, grayscale p 0.2, no blur, solarize p 0.0 / 0.2. Not reproducible here:
solo-learn's LARS uses trust coefficient 0.02 with lr clipping, sslx's LARS 1e-3.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="mocov3")
    recipes.cifar10(config)
    config.views.global_crops = recipes.byol_views(32, blur_prob=0.0)
    config.method.temperature = 0.2
    recipes.lars(config, base_lr=0.3, weight_decay=1e-6)
    return with_variant(config, arg, runlocal_overrides=recipes.predictor_runlocal())
