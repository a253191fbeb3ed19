r"""Jigsaw puzzles, ResNet-50 on ImageNet (Noroozi & Favaro 2016, "Unsupervised Learning
of Visual Representations by Solving Jigsaw Puzzles"; the public PyTorch code
bbrattoli/JigsawPuzzlePytorch, `JigsawTrain.py`, `run_jigsaw_training.sh`,
`Dataset/JigsawImageLoader.py`).

    python -m sslx.main --config=configs/jigsaw_resnet50.py --workdir=gs://BUCKET/jigsaw_r50

1000 permutations of maximal Hamming distance, a 225 px crop from the centre of the
image cut into 3 x 3 cells of 75 px, a 64 px tile at a random offset in each, each
tile standardised on its own; the context-free network's fc6 (1024 per tile) and fc7
(4096) above the tile encoder. Batch 128, SGD lr 0.001, momentum 0.9, weight decay
5e-4 on every parameter, 70 epochs, no warmup.

Deviations: a ResNet-50 (torchvision's, zero_init_residual off) instead of the CFN's
AlexNet; a cosine instead of the x0.1 steps every 20 epochs; the crop is the centred
square of the whole shorter side resized to 225 (the official code resizes the shorter
side to 256 and keeps the central 225); tiles stay 64 px (the official code resizes
them to 75), without its per-tile colour jitter (`rgb_jittering`) and without the
dropout after fc6 and fc7; the permutations come from the paper's greedy with a
max-min criterion (see `sslx.data.pretext.permutation_set`).
`:runlocal` upsamples Fashion-MNIST's 28 px images to a 42 px crop (14 px cells, 12 px
tiles), 100 permutations (the paper's smaller set), fc6 256 and fc7 1024, batch 128
for 150 steps (~10 CPU minutes).
"""

from sslx import recipes
from sslx.config_defaults import base_config, view_group, with_variant


def get_config(arg=None):
    config = base_config(method="jigsaw")
    recipes.imagenet(config, "resnet50", batch_size=128, epochs=70.0, checkpoint_every=5000)
    config.model.zero_init_residual = False
    # A centred square crop (no scale fits a square of the whole area, so the crop op's
    # centred fallback is taken), no flip or colour: tiles and permutations vary.
    config.views.global_crops = view_group(
        count=1, size=225, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
        crop_resize="bilinear", flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0,
        blur_prob=0.0, solarize_prob=0.0)
    config.optim.update(dict(
        name="sgd", base_lr=0.001, lr_scaling="none", min_lr=0.0, warmup_epochs=0.0,
        weight_decay=5e-4, momentum=0.9, exclude_bias_and_norm=False))
    return with_variant(config, arg, runlocal_overrides={
        "data.image_size": 42, "views.global_crops.size": 42,
        "method.num_permutations": 100, "method.tile_dim": 256, "method.hidden_dim": 1024,
        "train.batch_size": 128, "train.steps": 150})
