r"""DINO, ResNet-50 on ImageNet: the README's ResNet-50 command (Caron et al. 2021,
"Emerging Properties in Self-Supervised Vision Transformers"; facebookresearch/dino).

    python -m sslx.main --config=configs/dino_resnet50.py --workdir=gs://BUCKET/dino_r50

The README's command (`--arch resnet50 --optimizer sgd --lr 0.03 --weight_decay 1e-4
--weight_decay_end 1e-4 --global_crops_scale 0.14 1 --local_crops_scale 0.05 0.14` on
8 GPUs) with `main_dino.py`'s defaults for the rest: batch 8 x 64 = 512, 100 epochs,
SGD (momentum 0.9) at lr 0.03 x B/256, 10 warmup epochs, cosine to 1e-6, constant
weight decay 1e-4 (not on biases and BN), each gradient tensor clipped to norm 3.0,
2x224 + 8x96 crops, head 2048-2048-256 -> 65536 without BN, last layer normalised and
frozen for the first epoch, teacher momentum 0.996 -> 1, teacher temperature 0.04 (no
warm-up). Residual blocks start with BN scales of 1 (torchvision's default,
`zero_init_residual=False`). The teacher's BatchNorm uses the global-batch statistics of
the global crops (train mode, as the official code) and keeps its own running averages
for evaluation. The README publishes this run's log and checkpoint but no accuracy;
Table 2's RN50 row (linear 75.3, k-NN 67.5) comes from another run (dino issue #133).

`:runlocal`: a quarter-width CIFAR-stem ResNet-18 on Fashion-MNIST with the shrink of
configs/dino_vits16.py.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="dino")
    recipes.imagenet(config, "resnet50", batch_size=512, epochs=100.0)
    config.views = recipes.dino_views(local_count=8, global_scale=(0.14, 1.0),
                                      local_scale=(0.05, 0.14))
    config.method.teacher_temp = 0.04
    config.method.warmup_teacher_temp_epochs = 0.0
    recipes.dino_optim(config)
    config.optim.name = "sgd"
    config.optim.base_lr = 0.03
    config.optim.momentum = 0.9
    config.optim.weight_decay = 1e-4
    config.optim.weight_decay_end = -1.0  # constant
    config.model.zero_init_residual = False
    return with_variant(config, arg, runlocal_overrides=recipes.dino_runlocal())
