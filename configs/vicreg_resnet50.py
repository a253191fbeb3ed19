r"""VICReg, ResNet-50 on ImageNet (Bardes, Ponce & LeCun 2022, "VICReg:
Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
Sec. 4.3 and Appendix C.1; official code `main_vicreg.py`).

    python -m sslx.main --config=configs/vicreg_resnet50.py --workdir=gs://BUCKET/vicreg_r50

Batch 2048, 1000 epochs, LARS (biases and BN params excluded from weight decay and
LARS adaptation), lr 0.2 x B/256 with 10 warmup epochs then cosine down to 1/1000
of the peak, wd 1e-6, invariance/variance/covariance weights 25/25/1 over the
global batch, projector 8192-8192-8192 (Linear-BN-ReLU x 2, final Linear). BYOL's
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
    config.method.name = "vicreg"
    config.method.sim_weight = 25.0
    config.method.var_weight = 25.0
    config.method.cov_weight = 1.0
    config.method.projector_hidden_dim = 8192
    config.method.projector_dim = 8192

    config.optim.name = "lars"
    config.optim.base_lr = 0.2
    config.optim.lr_scaling = "linear"
    config.optim.min_lr = 0.0016  # 1/1000 of the peak lr 1.6 at batch 2048
    config.optim.warmup_epochs = 10.0
    config.optim.weight_decay = 1e-6
    config.optim.exclude_bias_and_norm = True
    config.train.batch_size = 2048
    config.train.epochs = 1000.0
    config.checkpoint.every_steps = 2500
    return with_variant(config, arg, runlocal_overrides={
        "method.projector_hidden_dim": 512, "method.projector_dim": 512})
