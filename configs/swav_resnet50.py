r"""SwAV, ResNet-50 on ImageNet with multi-crop 2x224 + 6x96 (Caron et al. 2020,
"Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
Sec. 4 and Appendix A; official `scripts/swav_800ep_pretrain.sh`, 75.3% linear top-1).

    python -m sslx.main --config=configs/swav_resnet50.py --workdir=gs://BUCKET/swav_r50

Batch 4096, LARS lr 4.8 (= 0.3 x B/256) with 10 warmup epochs then cosine to 0.0048, wd
1e-6, 800 epochs; LARS adaptation and weight decay on every parameter, biases and BN
included (apex LARC over all of `main_swav.py`'s parameters); residual blocks start with
BN scales of 1 (`zero_init_residual=False`); 3000 prototypes, projector 2048-2048(BN,
ReLU)-128, temperature 0.1, Sinkhorn epsilon 0.05 and 3 iterations, codes of the two 224
crops; prototypes frozen for the first epoch (313 iterations). Crops: 2 x 224 at scale
(0.14, 1) and 6 x 96 at (0.05, 0.14), flip, colour jitter 0.8/0.8/0.8/0.2 with p 0.8,
grayscale p 0.2, blur p 0.5. No queue: the official script's 3840-entry queue is rounded
down to a multiple of the global batch, i.e. to 0, at batch 4096. Differences: warmup
starts at 0 (official: 0.3); the queue is used as soon as it is full, at any size. The
small-batch recipe (Appendix A, `swav_200ep_bs256_pretrain.sh`):
`--config.train.batch_size=256 --config.optim.base_lr=0.6 --config.method.queue_length=3840
--config.method.queue_start_epoch=15 --config.optim.min_lr=0.0006
--config.optim.warmup_epochs=0 --config.train.epochs=200`.
`:runlocal` shrinks it to a CPU run on Fashion-MNIST (2x28 + 4x12 crops, 100 prototypes,
a 512-entry queue) with the same losses, augmentations and optimizer.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="swav")
    recipes.imagenet(config, "resnet50", batch_size=4096, epochs=800.0)
    config.views.global_crops = recipes.simclr_views(224, crop_scale=(0.14, 1.0),
                                                     crop_resize="bilinear")
    config.views.local_crops = recipes.simclr_views(96, count=6, crop_scale=(0.05, 0.14),
                                                    crop_resize="bilinear")
    recipes.lars(config, base_lr=0.3, weight_decay=1e-6, min_lr=0.0048)
    config.optim.exclude_bias_and_norm = False
    config.model.zero_init_residual = False
    config.optim.frozen.prototypes = 1.0
    return with_variant(config, arg, runlocal_overrides={
        **recipes.swav_runlocal(), "views.local_crops.count": 4})
