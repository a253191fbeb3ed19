r"""Barlow Twins, ResNet-50 on ImageNet (Zbontar et al. 2021, "Barlow Twins:
Self-Supervised Learning via Redundancy Reduction", Sec. 2-3 and Appendix A).

    python -m sslx.main --config=configs/barlow_twins_resnet50.py --workdir=gs://BUCKET/barlow_r50

Batch 2048, 1000 epochs, LARS (biases and BN params excluded from weight decay and
LARS adaptation), lr 0.2 x B/256 for the weights and 0.0048 x B/256 for biases and
BN params (`optim.lr_multipliers`), 10 warmup epochs then cosine down to 1/1000 of
the peak, wd 1.5e-6, λ = 0.0051, projector 8192-8192-8192 (Linear-BN-ReLU x 2, final
Linear; the affine-free BN of each branch's output is in the loss). BYOL's
augmentations: crop 0.08-1, colour jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2,
blur p 1.0 / 0.1, solarize p 0 / 0.2.

`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe and a
512-wide projector.
"""

from sslx.config_defaults import base_config, imagenet_data, view_group, with_variant


def get_config(arg=None):
    config = base_config()
    imagenet_data(config)
    config.views.global_crops = view_group(
        count=2, size=224, crop_scale=(0.08, 1.0), jitter_prob=0.8, brightness=0.4,
        contrast=0.4, saturation=0.2, hue=0.1, grayscale_prob=0.2, blur_prob=(1.0, 0.1),
        solarize_prob=(0.0, 0.2))

    config.model.name = "resnet50"
    config.model.stem = "imagenet"
    config.method.name = "barlow_twins"
    config.method.lambd = 0.0051
    config.method.loss_scale = 1.0
    config.method.projector_hidden_dim = 8192
    config.method.projector_dim = 8192

    config.optim.name = "lars"
    config.optim.base_lr = 0.2
    config.optim.lr_scaling = "linear"
    config.optim.min_lr = 0.0016  # 1/1000 of the peak lr 1.6 at batch 2048
    config.optim.warmup_epochs = 10.0
    config.optim.weight_decay = 1.5e-6
    config.optim.exclude_bias_and_norm = True
    config.optim.lr_multipliers["(bias|scale)$"] = 0.0048 / 0.2  # BN scales are "scale"
    config.train.batch_size = 2048
    config.train.epochs = 1000.0
    config.checkpoint.every_steps = 2500
    return with_variant(config, arg, runlocal_overrides={
        "method.projector_hidden_dim": 512, "method.projector_dim": 512})
