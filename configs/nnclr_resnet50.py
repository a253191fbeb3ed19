r"""NNCLR, ResNet-50 on ImageNet (Dwibedi et al. 2021, "With a Little Help from My
Friends: Nearest-Neighbor Contrastive Learning of Visual Representations", Sec. 3-4
and Appendix A).

    python -m sslx.main --config=configs/nnclr_resnet50.py --workdir=gs://BUCKET/nnclr_r50

Batch 4096, 1000 epochs (the paper's headline 75.6% run), LARS (biases and BN params
excluded from weight decay and LARS adaptation), base lr 0.15 x B/256 (2.4 at 4096)
with 10 warmup epochs then cosine, wd 1e-6, temperature 0.1, support set of 98304
projections. Projector 2048-2048-256 with BN after every layer, predictor 4096-256.
BYOL's augmentations: crop 0.08-1, colour jitter (0.4, 0.4, 0.2, 0.1) p 0.8,
grayscale p 0.2, blur p 1.0 / 0.1, solarize p 0 / 0.2.

The support set starts as random unit vectors and each step enqueues the first
view's projections of the whole global batch (see sslx/methods/nnclr.py).
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with a 4096-row support set and
512/1024-wide projector/predictor hidden layers.
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
    config.method.name = "nnclr"
    config.method.temperature = 0.1
    config.method.queue_size = 98304
    config.method.projector_hidden_dim = 2048
    config.method.projector_dim = 256
    config.method.predictor_hidden_dim = 4096

    config.optim.name = "lars"
    config.optim.base_lr = 0.15
    config.optim.lr_scaling = "linear"
    config.optim.warmup_epochs = 10.0
    config.optim.weight_decay = 1e-6
    config.optim.exclude_bias_and_norm = True
    config.train.batch_size = 4096
    config.train.epochs = 1000.0
    config.checkpoint.every_steps = 2500
    return with_variant(config, arg, runlocal_overrides={
        "method.queue_size": 4096, "method.projector_hidden_dim": 512,
        "method.predictor_hidden_dim": 1024})
