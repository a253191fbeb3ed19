r"""Barlow Twins, ResNet-18 with the CIFAR stem on CIFAR-10.

    python -m sslx.main --config=configs/barlow_twins_resnet18_cifar10.py --workdir=/tmp/barlow_c10

The paper has no CIFAR recipe; this is solo-learn's published CIFAR config
(`scripts/pretrain/cifar/barlow.yaml`, da Costa et al. 2022): batch 256,
1000 epochs, LARS lr 0.3 x B/256, 10 warmup epochs, cosine, wd 1e-4, biases and BN
excluded from wd and LARS adaptation, λ = 0.0051, loss scaled by 0.1, projector
2048-2048-2048; crop 0.08-1, colour jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2,
no blur, solarize p 0 / 0.2.

Deviation: solo-learn's LARS uses trust coefficient eta = 0.02 with `clip_lr`; sslx's
LARS fixes eta = 1e-3 (the ImageNet recipes' value) without clipping, so weights take
smaller steps than in solo-learn.

`:runlocal` shrinks it to a CPU run on Fashion-MNIST with a 512-wide projector.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="barlow_twins")
    recipes.cifar10(config)
    config.views.global_crops = recipes.byol_views(32, blur_prob=0.0)
    config.method.loss_scale = 0.1
    config.method.projector_hidden_dim = 2048
    config.method.projector_dim = 2048
    recipes.lars(config, base_lr=0.3, weight_decay=1e-4)
    return with_variant(config, arg, runlocal_overrides=recipes.projector_runlocal())
