r"""VICReg, ResNet-50 on ImageNet (Bardes, Ponce & LeCun 2022, "VICReg:
Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
Sec. 4.3 and Appendix C.1; official code `main_vicreg.py`).

    python -m sslx.main --config=configs/vicreg_resnet50.py --workdir=gs://BUCKET/vicreg_r50

Batch 2048, 1000 epochs, LARS (biases and BN params excluded from weight decay and
LARS adaptation), lr 0.2 x B/256 with 10 warmup epochs then cosine down to 1/1000
of the peak, wd 1e-6, invariance/variance/covariance weights 25/25/1 over the
global batch, projector 8192-8192-8192 (Linear-BN-ReLU x 2, final Linear). BYOL's
augmentations as `augmentations.py`: crop 0.08-1 resized bicubically, colour jitter
(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2, PIL's blur p 1.0 / 0.1, solarize p 0 / 0.2.

`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe and a
512-wide projector.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="vicreg")
    recipes.imagenet(config, "resnet50", batch_size=2048, epochs=1000.0)
    config.views.global_crops = recipes.byol_views(224, blur_kernel="three_sigma")
    # min_lr: 1/1000 of the peak lr 1.6 at batch 2048.
    recipes.lars(config, base_lr=0.2, weight_decay=1e-6, min_lr=0.0016)
    return with_variant(config, arg, runlocal_overrides=recipes.projector_runlocal())
