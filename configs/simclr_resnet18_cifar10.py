r"""SimCLR, ResNet-18 with the CIFAR stem on CIFAR-10 (Chen et al. 2020, Appendix B.9).

    python -m sslx.main --config=configs/simclr_resnet18_cifar10.py --workdir=/tmp/simclr_c10

Batch 1024, LARS lr 1.0 (= 0.25 x B/256), wd 1e-6, 10 warmup epochs, cosine, 1000
epochs, temperature 0.5, loss at the official code's scale (twice the mean over the 2N
anchors), colour distortion strength 0.5, no blur, 3x3 stride-1 stem without max-pool.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="simclr")
    recipes.cifar10(config, batch_size=1024, checkpoint_every=2000)
    config.views.global_crops = recipes.simclr_views(32, strength=0.5, blur_prob=0.0)
    config.method.temperature = 0.5
    recipes.lars(config, base_lr=0.25, weight_decay=1e-6)
    return with_variant(config, arg)
