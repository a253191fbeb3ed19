r"""RotNet, ResNet-50 on ImageNet (Gidaris et al. 2018, "Unsupervised Representation
Learning by Predicting Image Rotations"; official code gidariss/FeatureLearningRotNet,
`config/ImageNet_RotNet_AlexNet.py`, the recipe of its ImageNet results).

    python -m sslx.main --config=configs/rotation_resnet50.py --workdir=gs://BUCKET/rotnet_r50

Batch 192 images (768 rotated ones a step), 50 epochs, SGD momentum 0.9, weight decay
5e-4 on every parameter, lr 0.01 (the first entry of its lr table, which replaces the
nominal 0.1 before the first epoch) for this batch, no warmup. Random resized crop
(0.08-1, bilinear, `random_sized_crop`) and flip, then the 4 rotations.

Deviations: a ResNet-50 (torchvision's, zero_init_residual off) instead of the official
AlexNet/NIN; a cosine instead of the official steps (x0.1 at epochs 15, 30 and 45);
plain momentum instead of Nesterov's (`config.optim` has no Nesterov switch).
`:runlocal` trains it on Fashion-MNIST's 28 px images (a 28 px crop, its 4 rotations),
batch 128 for 120 steps (~10 CPU minutes).
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="rotation")
    recipes.imagenet(config, "resnet50", batch_size=192, epochs=50.0, checkpoint_every=5000)
    config.model.zero_init_residual = False
    config.views.global_crops = recipes.supervised_views(224)
    config.optim.update(dict(
        name="sgd", base_lr=0.01, lr_scaling="none", min_lr=0.0, warmup_epochs=0.0,
        weight_decay=5e-4, momentum=0.9, exclude_bias_and_norm=False))
    return with_variant(config, arg, runlocal_overrides={"train.batch_size": 128,
                                                         "train.steps": 120})
