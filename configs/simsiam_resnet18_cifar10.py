r"""SimSiam, ResNet-18 with the CIFAR stem on CIFAR-10 (Chen & He 2021, Appendix D;
800 epochs, 91.8% linear top-1).

    python -m sslx.main --config=configs/simsiam_resnet18_cifar10.py --workdir=/tmp/simsiam_c10

Batch 512, SGD momentum 0.9, lr 0.03 x B/256, wd 5e-4, cosine without warmup, 800 epochs,
predictor at the fixed initial lr. Projector: 2 x (Dense 2048 - BN), output BN without
affine; predictor: Dense 512 - BN - ReLU - Dense 2048. Views as on ImageNet without blur.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx.config_defaults import base_config, cifar10_data, view_group, with_variant


def get_config(arg=None):
    config = base_config()
    cifar10_data(config)
    config.views.global_crops = view_group(
        count=2, size=32, crop_scale=(0.2, 1.0), jitter_prob=0.8, brightness=0.4,
        contrast=0.4, saturation=0.4, hue=0.1, grayscale_prob=0.2, blur_prob=0.0,
        solarize_prob=0.0)

    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.method.name = "simsiam"
    config.method.projector_layers = 2
    config.method.projector_hidden_dim = 2048
    config.method.projector_dim = 2048
    config.method.predictor_hidden_dim = 512

    config.optim.name = "sgd"
    config.optim.base_lr = 0.03
    config.optim.lr_scaling = "linear"
    config.optim.warmup_epochs = 0.0
    config.optim.weight_decay = 5e-4
    config.optim.momentum = 0.9
    config.optim.exclude_bias_and_norm = False
    config.optim.constant_lr = ("^predictor/",)
    config.train.batch_size = 512
    config.train.epochs = 800.0
    config.checkpoint.every_steps = 5000
    return with_variant(config, arg, runlocal_overrides={
        "method.projector_hidden_dim": 512, "method.projector_dim": 512,
        "method.predictor_hidden_dim": 128,
        "train.steps": 100})  # ~5 CPU minutes
