r"""SimSiam, ResNet-18 with the CIFAR stem on CIFAR-10 (Chen & He 2021, Appendix D;
800 epochs, 91.8% linear top-1).

    python -m sslx.main --config=configs/simsiam_resnet18_cifar10.py --workdir=/tmp/simsiam_c10

Batch 512, SGD momentum 0.9, lr 0.03 x B/256, wd 5e-4, cosine without warmup, 800 epochs,
predictor at the fixed initial lr. Projector: 2 x (Dense 2048 - BN), output BN without
affine; predictor: Dense 512 - BN - ReLU - Dense 2048. Views as on ImageNet without blur.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="simsiam")
    recipes.cifar10(config, batch_size=512, epochs=800.0)
    config.views.global_crops = recipes.simsiam_views(32, blur_prob=0.0)
    config.method.projector_layers = 2
    recipes.simsiam_sgd(config, base_lr=0.03, weight_decay=5e-4)
    return with_variant(config, arg, runlocal_overrides=recipes.simsiam_runlocal())
