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

from sslx.config_defaults import base_config, cifar10_data, view_group, with_variant


def get_config(arg=None):
    config = base_config()
    cifar10_data(config)
    config.views.global_crops = view_group(
        count=2, size=32, crop_scale=(0.08, 1.0), jitter_prob=0.8, brightness=0.4,
        contrast=0.4, saturation=0.2, hue=0.1, grayscale_prob=0.2, blur_prob=0.0,
        solarize_prob=(0.0, 0.2))

    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.method.name = "byol"
    config.method.projector_hidden_dim = 4096
    config.method.projector_dim = 256
    config.method.predictor_hidden_dim = 4096
    config.method.base_momentum = 0.99

    config.optim.name = "lars"
    config.optim.base_lr = 1.0
    config.optim.lr_scaling = "linear"
    config.optim.warmup_epochs = 10.0
    config.optim.weight_decay = 1e-5
    config.optim.momentum = 0.9
    config.optim.exclude_bias_and_norm = True
    config.train.batch_size = 256
    config.train.epochs = 1000.0
    config.checkpoint.every_steps = 5000
    return with_variant(config, arg, runlocal_overrides={
        "method.projector_hidden_dim": 512, "method.projector_dim": 128,
        "method.predictor_hidden_dim": 512,
        "train.steps": 70})  # four forward passes a step: ~5 CPU minutes
