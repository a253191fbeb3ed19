r"""BYOL, ResNet-50 on ImageNet (Grill et al. 2020, "Bootstrap Your Own Latent",
Sec. 3.3 and Appendices B-C; the 1000-epoch headline recipe, 74.3% linear top-1).

    python -m sslx.main --config=configs/byol_resnet50.py --workdir=gs://BUCKET/byol_r50

Batch 4096, LARS lr 0.2 x B/256, wd 1.5e-6, biases and BN params excluded from weight
decay and LARS adaptation, 10 warmup epochs then cosine, 1000 epochs. Projector and
predictor: Dense 4096 - BN - ReLU - Dense 256. Target = EMA of backbone + projector
with tau from 0.996 to 1 (cosine); the 300-epoch recipe of App. C uses
`--config.train.epochs=300 --config.method.base_momentum=0.99`.
Asymmetric views (App. B, Table 6): crop 0.08-1, flip, colour jitter (0.4, 0.4, 0.2, 0.1)
p 0.8, grayscale p 0.2, blur p 1.0 / 0.1, solarize p 0.0 / 0.2.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx.config_defaults import base_config, imagenet_data, view_group, with_variant


def get_config(arg=None):
    config = base_config()
    imagenet_data(config)
    # One group of two crops; tuples give view 1 / view 2 their own probabilities.
    config.views.global_crops = view_group(
        count=2, size=224, crop_scale=(0.08, 1.0), jitter_prob=0.8, brightness=0.4,
        contrast=0.4, saturation=0.2, hue=0.1, grayscale_prob=0.2, blur_prob=(1.0, 0.1),
        solarize_prob=(0.0, 0.2))

    config.model.name = "resnet50"
    config.model.stem = "imagenet"
    config.method.name = "byol"
    config.method.projector_hidden_dim = 4096
    config.method.projector_dim = 256
    config.method.predictor_hidden_dim = 4096
    config.method.base_momentum = 0.996

    config.optim.name = "lars"
    config.optim.base_lr = 0.2
    config.optim.lr_scaling = "linear"
    config.optim.warmup_epochs = 10.0
    config.optim.weight_decay = 1.5e-6
    config.optim.momentum = 0.9
    config.optim.exclude_bias_and_norm = True
    config.train.batch_size = 4096
    config.train.epochs = 1000.0
    config.checkpoint.every_steps = 2500
    return with_variant(config, arg, runlocal_overrides={
        "method.projector_hidden_dim": 512, "method.projector_dim": 128,
        "method.predictor_hidden_dim": 512,
        "train.steps": 70})  # four forward passes a step: ~5 CPU minutes
