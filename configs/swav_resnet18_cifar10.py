r"""SwAV, ResNet-18 with the CIFAR stem on CIFAR-10: solo-learn's recipe (da Costa et
al. 2022, JMLR, `scripts/pretrain/cifar/swav.yaml`; the SwAV paper has no CIFAR recipe).

    python -m sslx.main --config=configs/swav_resnet18_cifar10.py --workdir=/tmp/swav_c10

Batch 256, LARS lr 0.6, 10 warmup epochs then cosine to 0.0006, wd 1e-6, 1000 epochs;
3000 prototypes frozen for the first 2 epochs, projector 2048-2048-128, temperature 0.1,
Sinkhorn epsilon 0.05 and 3 iterations; a 3840-entry queue from epoch 50. Two 32-px
crops at scale (0.08, 1) (no multi-crop), colour jitter 0.8/0.8/0.8/0.2 with p 0.8,
grayscale p 0.2, no blur. As the official SwAV code: LARS adaptation and weight decay
on every parameter, residual blocks starting with BN scales of 1. (solo-learn's LARS
uses trust coefficient 0.02; sslx's is 1e-3.) `:runlocal` shrinks it to a CPU run on
Fashion-MNIST with the same recipe.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="swav")
    recipes.cifar10(config, checkpoint_every=2000)
    config.views.global_crops = recipes.simclr_views(32, blur_prob=0.0)
    config.method.queue_length = 3840
    config.method.queue_start_epoch = 50.0
    recipes.lars(config, base_lr=0.6, weight_decay=1e-6, min_lr=0.0006)
    config.optim.exclude_bias_and_norm = False  # apex LARC's reach, as main_swav.py
    config.model.zero_init_residual = False  # as SwAV's own ResNet
    config.optim.frozen.prototypes = 2.0
    return with_variant(config, arg, runlocal_overrides=recipes.swav_runlocal())
