r"""SimCLR, ResNet-50 on ImageNet (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", Sec. 3-4 and Appendix B.1/B.9).

    python -m sslx.main --config=configs/simclr_resnet50.py --workdir=gs://BUCKET/simclr_r50

Batch 4096, LARS lr 0.3 x B/256, wd 1e-6, 10 warmup epochs then cosine, temperature 0.1,
loss at the official code's scale (twice the mean over the 2N anchors),
2-layer projector to 128-d (SimCLR v2's 3-layer projector:
`--config.method.projector_layers=3`). Augmentations: random resized crop 0.08-1,
flip, colour distortion of strength 1.0 (p 0.8), grayscale p 0.2, blur p 0.5.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="simclr")
    recipes.imagenet(config, "resnet50", batch_size=4096, epochs=100.0)
    config.views.global_crops = recipes.simclr_views(224)
    recipes.lars(config, base_lr=0.3, weight_decay=1e-6)
    return with_variant(config, arg)
