r"""Barlow Twins, ResNet-50 on ImageNet (Zbontar et al. 2021, "Barlow Twins:
Self-Supervised Learning via Redundancy Reduction", Sec. 2-3 and Appendix A).

    python -m sslx.main --config=configs/barlow_twins_resnet50.py --workdir=gs://BUCKET/barlow_r50

Batch 2048, 1000 epochs, LARS (biases and BN params excluded from weight decay and
LARS adaptation), lr 0.2 x B/256 for the weights and 0.0048 x B/256 for biases and
BN params (`optim.lr_multipliers`), 10 warmup epochs then cosine down to 1/1000 of
the peak, wd 1e-6 (`main.py`'s default; the paper says 1.5e-6), λ = 0.0051,
projector 8192-8192-8192 (Linear-BN-ReLU x 2, final Linear; the affine-free BN of
each branch's output is in the loss), loss scaled by 1/16 (`method.loss_scale`): the
official code all-reduces the cross-correlation outside autograd, so each of its 16
GPUs back-propagates only its own share, and DDP then averages the gradients: its
effective gradient is the true one / 16, which sets the steps of the LARS-unadapted
biases and BN params and the balance of weight decay against the loss. The logged
loss is the scaled one. BYOL's augmentations as `main.py`'s `Transform`: crop 0.08-1
resized bicubically, colour jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2, PIL's
blur p 1.0 / 0.1, solarize p 0 / 0.2.

`:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe and a
512-wide projector.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="barlow_twins")
    recipes.imagenet(config, "resnet50", batch_size=2048, epochs=1000.0)
    config.views.global_crops = recipes.byol_views(224, blur_kernel="three_sigma")
    # min_lr: 1/1000 of the peak lr 1.6 at batch 2048; BN scales are "scale".
    recipes.lars(config, base_lr=0.2, weight_decay=1e-6, min_lr=0.0016)
    config.optim.lr_multipliers["(bias|scale)$"] = 0.0048 / 0.2
    config.method.loss_scale = 1 / 16  # 16 GPUs' averaged share-of-the-gradient (see above)
    return with_variant(config, arg, runlocal_overrides=recipes.projector_runlocal())
