r"""SimCLR, ResNet-50 on ImageNet (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", Sec. 3-4 and Appendix B.1/B.9).

    python -m sslx.main --config=configs/simclr_resnet50.py --workdir=gs://BUCKET/simclr_r50

Batch 4096, LARS lr 0.3 x B/256, wd 1e-6, 10 warmup epochs then cosine, temperature 0.1,
2-layer projector to 128-d (SimCLR v2's 3-layer projector:
`--config.method.projector_layers=3`). Augmentations: random resized crop 0.08-1,
flip, colour distortion of strength 1.0 (p 0.8), grayscale p 0.2, blur p 0.5.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe.
"""

from sslx.config_defaults import (
    base_config,
    color_distortion,
    imagenet_data,
    view_group,
    with_variant,
)


def get_config(arg=None):
    config = base_config()
    imagenet_data(config)
    config.views.global_crops = view_group(
        count=2, size=224, crop_scale=(0.08, 1.0), jitter_prob=0.8, **color_distortion(1.0),
        grayscale_prob=0.2, blur_prob=0.5, solarize_prob=0.0)

    config.model.name = "resnet50"
    config.model.stem = "imagenet"
    config.method.name = "simclr"
    config.method.temperature = 0.1
    config.method.projector_layers = 2
    config.method.projector_hidden_dim = 2048
    config.method.projector_dim = 128

    config.optim.name = "lars"
    config.optim.base_lr = 0.3
    config.optim.lr_scaling = "linear"
    config.optim.warmup_epochs = 10.0
    config.optim.weight_decay = 1e-6
    config.train.batch_size = 4096
    config.train.epochs = 100.0
    config.checkpoint.every_steps = 2500
    return with_variant(config, arg)
