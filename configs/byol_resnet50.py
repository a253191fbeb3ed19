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

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="byol")
    recipes.imagenet(config, "resnet50", batch_size=4096, epochs=1000.0)
    config.views.global_crops = recipes.byol_views(224)
    recipes.lars(config, base_lr=0.2, weight_decay=1.5e-6)
    return with_variant(config, arg, runlocal_overrides=recipes.predictor_runlocal())
