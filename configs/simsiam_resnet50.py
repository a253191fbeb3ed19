r"""SimSiam, ResNet-50 on ImageNet (Chen & He 2021, "Exploring Simple Siamese
Representation Learning", Sec. 3 and Appendix A; 100 epochs, 68.1% linear top-1).

    python -m sslx.main --config=configs/simsiam_resnet50.py --workdir=gs://BUCKET/simsiam_r50

Batch 512, SGD momentum 0.9, lr 0.05 x B/256, wd 1e-4 on every parameter (PyTorch SGD),
cosine without warmup set once per epoch, 100 epochs; the predictor keeps the initial
lr ("fix_lr", Sec. 4.2).
Projector: 3 x (Dense 2048 - BN), ReLU between, output BN without affine; predictor:
Dense 512 - BN - ReLU - Dense 2048. Views: crop 0.2-1, colour jitter (0.4, 0.4, 0.4, 0.1)
p 0.8, grayscale p 0.2, PIL's blur p 0.5, flip; both views alike.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe
(narrower heads, fewer steps).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="simsiam")
    recipes.imagenet(config, "resnet50", batch_size=512, epochs=100.0, checkpoint_every=5000)
    config.views.global_crops = recipes.simsiam_views(224)
    recipes.simsiam_sgd(config, base_lr=0.05, weight_decay=1e-4)
    return with_variant(config, arg, runlocal_overrides=recipes.simsiam_runlocal())
