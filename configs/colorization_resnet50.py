r"""Colorization, ResNet-50 on ImageNet (Zhang, Isola & Efros 2016, "Colorful Image
Colorization", ECCV, Sec. 2-3; official code richzhang/colorization).

    python -m sslx.main --config=configs/colorization_resnet50.py --workdir=gs://BUCKET/color_r50

From the L channel of a crop, predict the distribution over the in-gamut ab bins
of side 10 at a quarter of the crop's side: soft-encoded targets (5 nearest bins,
sigma 5), class rebalancing with lambda 0.5 (see sslx/data/color.py and
sslx/methods/colorization.py). Adam with beta1 0.9, beta2 0.99, lr 3e-5, weight
decay 1e-3, batch 40, 450k iterations (about 14 epochs), 176-px crops of the
image, flipped.

Deviations from the paper: a ResNet-50 instead of its VGG-style network with
dilated convolutions, so the logits come at 1/32 of the side from a 1x1
convolution and are upsampled bilinearly to the quarter-resolution targets; a
cosine from 3e-5 to 3e-6 instead of the drops to 1e-5 and 3e-6 at 200k and 375k
iterations; AdamW's decoupled weight decay (not on biases and norms) instead of
Caffe's L2 term in the gradient, at the same nominal 1e-3; the square crop is
47% of the image's area, as 176 of 256 px of the paper's resized square images,
resized to 176; the rebalancing prior is counted on the first 1000 training
images, not the whole of ImageNet; 261 ab bins cover the sRGB gamut here, not 313.

`:runlocal` trains a ResNet-18 (CIFAR stem, width 16) on 32-px RGB patches of
scikit-learn's two sample photos (`sslx.data.photos`: Fashion-MNIST is grey, its
colour targets would all be the neutral bin), 300 steps of 128 with Adam at lr
1e-3 (at 3e-5, 300 steps barely move the weights), and ends with the k-NN top-1
of the test patches' region labels (which photo, which quadrant) against the
train patches'.
"""

from sslx import recipes
from sslx.config_defaults import IMAGENET_MEAN, IMAGENET_STD, base_config, view_group, with_variant


def get_config(arg=None):
    config = base_config(method="colorization")
    recipes.imagenet(config, "resnet50", batch_size=40, epochs=450_000 * 40 / 1_281_167)
    config.views.global_crops = view_group(
        count=1, size=176, crop_scale=(0.47, 0.47), crop_ratio=(1.0, 1.0),
        crop_resize="bilinear", flip_prob=0.5, jitter_prob=0.0, grayscale_prob=0.0,
        blur_prob=0.0, solarize_prob=0.0)
    # The network turns its normalised input back into colours with the data's statistics.
    config.method.input_mean = config.data.get_ref("mean")
    config.method.input_std = config.data.get_ref("std")
    config.optim.update(dict(
        name="adamw", base_lr=3e-5, lr_scaling="none", min_lr=3e-6, warmup_epochs=0.0,
        b1=0.9, b2=0.99, weight_decay=1e-3, exclude_bias_and_norm=True))
    return with_variant(config, arg, runlocal_overrides={
        "data.source": "sample_photos", "data.path": "", "data.image_size": 32,
        "data.mean": IMAGENET_MEAN, "data.std": IMAGENET_STD, "data.shuffle_buffer": 4096,
        "views.global_crops.size": 32, "method.prior_examples": 512,
        "train.batch_size": 128, "train.steps": 300, "optim.base_lr": 1e-3,
        "optim.min_lr": 1e-4})
