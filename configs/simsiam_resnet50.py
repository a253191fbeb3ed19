r"""SimSiam, ResNet-50 on ImageNet (Chen & He 2021, "Exploring Simple Siamese
Representation Learning", Sec. 3 and Appendix A; 100 epochs, 68.1% linear top-1).

    python -m sslx.main --config=configs/simsiam_resnet50.py --workdir=gs://BUCKET/simsiam_r50

Batch 512, SGD momentum 0.9, lr 0.05 x B/256, wd 1e-4 on every parameter (PyTorch SGD),
cosine without warmup, 100 epochs; the predictor keeps the initial lr ("fix_lr", Sec. 4.2).
Projector: 3 x (Dense 2048 - BN), ReLU between, output BN without affine; predictor:
Dense 512 - BN - ReLU - Dense 2048. Views: crop 0.2-1, colour jitter (0.4, 0.4, 0.4, 0.1)
p 0.8, grayscale p 0.2, blur p 0.5, flip; both views alike.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx.config_defaults import base_config, imagenet_data, view_group, with_variant


def get_config(arg=None):
    config = base_config()
    imagenet_data(config)
    config.views.global_crops = view_group(
        count=2, size=224, crop_scale=(0.2, 1.0), jitter_prob=0.8, brightness=0.4,
        contrast=0.4, saturation=0.4, hue=0.1, grayscale_prob=0.2, blur_prob=0.5,
        solarize_prob=0.0)

    config.model.name = "resnet50"
    config.model.stem = "imagenet"
    config.method.name = "simsiam"
    config.method.projector_layers = 3
    config.method.projector_hidden_dim = 2048
    config.method.projector_dim = 2048
    config.method.predictor_hidden_dim = 512

    config.optim.name = "sgd"
    config.optim.base_lr = 0.05
    config.optim.lr_scaling = "linear"
    config.optim.warmup_epochs = 0.0
    config.optim.weight_decay = 1e-4
    config.optim.momentum = 0.9
    config.optim.exclude_bias_and_norm = False
    config.optim.constant_lr = ("^predictor/",)
    config.train.batch_size = 512
    config.train.epochs = 100.0
    config.checkpoint.every_steps = 5000
    return with_variant(config, arg, runlocal_overrides={
        "method.projector_hidden_dim": 512, "method.projector_dim": 512,
        "method.predictor_hidden_dim": 128,
        "train.steps": 100})  # ~5 CPU minutes
