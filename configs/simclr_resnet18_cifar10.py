r"""SimCLR, ResNet-18 with the CIFAR stem on CIFAR-10 (Chen et al. 2020, Appendix B.9).

    python -m sslx.main --config=configs/simclr_resnet18_cifar10.py --workdir=/tmp/simclr_c10

Batch 1024, LARS lr 1.0 (= 0.25 x B/256), wd 1e-6, 10 warmup epochs, cosine, 1000 epochs,
temperature 0.5, colour distortion strength 0.5, no blur, 3x3 stride-1 stem without
max-pool. `:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe.
"""

from sslx.config_defaults import (
    base_config,
    cifar10_data,
    color_distortion,
    view_group,
    with_variant,
)


def get_config(arg=None):
    config = base_config()
    cifar10_data(config)
    config.views.global_crops = view_group(
        count=2, size=32, crop_scale=(0.08, 1.0), jitter_prob=0.8, **color_distortion(0.5),
        grayscale_prob=0.2, blur_prob=0.0, solarize_prob=0.0)

    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.method.name = "simclr"
    config.method.temperature = 0.5
    config.method.projector_layers = 2
    config.method.projector_hidden_dim = 2048
    config.method.projector_dim = 128

    config.optim.name = "lars"
    config.optim.base_lr = 0.25
    config.optim.lr_scaling = "linear"
    config.optim.warmup_epochs = 10.0
    config.optim.weight_decay = 1e-6
    config.train.batch_size = 1024
    config.train.epochs = 1000.0
    config.checkpoint.every_steps = 2000
    return with_variant(config, arg)
