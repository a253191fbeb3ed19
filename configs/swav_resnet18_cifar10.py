r"""SwAV, ResNet-18 with the CIFAR stem on CIFAR-10: solo-learn's recipe (da Costa et
al. 2022, JMLR, `scripts/pretrain/cifar/swav.yaml`; the SwAV paper has no CIFAR recipe).

    python -m sslx.main --config=configs/swav_resnet18_cifar10.py --workdir=/tmp/swav_c10

Batch 256, LARS lr 0.6, 10 warmup epochs then cosine to 0.0006, wd 1e-6, 1000 epochs;
3000 prototypes frozen for the first 2 epochs, projector 2048-2048-128, temperature 0.1,
Sinkhorn epsilon 0.05 and 3 iterations; a 3840-entry queue from epoch 50. Two 32-px
crops at scale (0.08, 1) (no multi-crop), colour jitter 0.8/0.8/0.8/0.2 with p 0.8,
grayscale p 0.2, no blur. (solo-learn's LARS uses trust coefficient 0.02; sslx's is
1e-3.) `:runlocal` shrinks it to a CPU run on Fashion-MNIST with the same recipe.
"""

from sslx.config_defaults import (
    base_config,
    cifar10_data,
    color_distortion,
    view_group,
    with_variant,
)


def get_config(arg=None):
    config = base_config()
    cifar10_data(config)
    config.views.global_crops = view_group(
        count=2, size=32, crop_scale=(0.08, 1.0), jitter_prob=0.8, **color_distortion(1.0),
        grayscale_prob=0.2, blur_prob=0.0, solarize_prob=0.0)

    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.method.name = "swav"
    config.method.num_prototypes = 3000
    config.method.projector_hidden_dim = 2048
    config.method.projector_dim = 128
    config.method.temperature = 0.1
    config.method.epsilon = 0.05
    config.method.sinkhorn_iterations = 3
    config.method.num_assign_crops = 2
    config.method.queue_length = 3840
    config.method.queue_start_epoch = 50.0

    config.optim.name = "lars"
    config.optim.base_lr = 0.6
    config.optim.lr_scaling = "linear"
    config.optim.min_lr = 0.0006
    config.optim.warmup_epochs = 10.0
    config.optim.weight_decay = 1e-6
    config.optim.frozen.prototypes = 2.0
    config.train.batch_size = 256
    config.train.epochs = 1000.0
    config.checkpoint.every_steps = 2000
    return with_variant(config, arg, runlocal_overrides={
        "method.num_prototypes": 100,
        "method.projector_hidden_dim": 512,
        "method.queue_length": 512,
        "method.queue_start_epoch": 0.1,
        "optim.frozen.prototypes": 0.05,
        "optim.min_lr": 0.0,
        "train.steps": 60,
    })
