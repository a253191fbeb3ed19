r"""Supervised ResNet-50 on ImageNet: the baseline the self-supervised recipes are
compared with (torchvision's reference recipe, `references/classification`, as in
He et al. 2016 and Goyal et al. 2017).

    python -m sslx.main --config=configs/supervised_resnet50.py --workdir=gs://BUCKET/sup_r50

Batch 256, SGD momentum 0.9, lr 0.1 x B/256, weight decay 1e-4 on every parameter,
90 epochs; a cosine instead of the step decay at epochs 30 and 60 (see
docs/RECIPES.md). Random resized crop 0.08-1 and flip. The last BatchNorm of each
block starts at zero (Goyal et al. 2017). The run ends with its classifier's test
accuracy (`classifier top-1`) beside the k-NN of its features. `:runlocal` trains it
on Fashion-MNIST's labels: the supervised figures beside the self-supervised k-NN.
"""

from sslx import evaluators, recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="supervised")
    recipes.imagenet(config, "resnet50", batch_size=256, epochs=90.0, checkpoint_every=5000)
    config.views.global_crops = recipes.supervised_views(224)
    config.optim.update(dict(
        name="sgd", base_lr=0.1, lr_scaling="linear", warmup_epochs=0.0, weight_decay=1e-4,
        momentum=0.9, exclude_bias_and_norm=False))
    config.evals.classifier = evaluators.default_config("classifier")  # its test top-1
    return with_variant(config, arg, runlocal_overrides={"method.num_classes": 10})
