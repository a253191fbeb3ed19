"""Blocks of published recipes that several files in `configs/` share.

The role of big_vision's `configs/common.py`: plain functions that update a
config or return a ConfigDict, each saying which recipe it follows. They live
in the package rather than beside the recipes because a recipe file is loaded
by its path (`--config=configs/x.py`, `importlib` in the tests), not imported
as a module of a package: `configs/common.py` would be importable from a recipe
only after each recipe put `configs/` on `sys.path`, while `sslx.recipes`
imports from any working directory.

A block sets every field of its part of the recipe, also where the value equals
`base_config`'s, so a recipe reads as what it runs. Method fields come from the
method's registered defaults (`base_config(method=...)`), not from here.
"""

from __future__ import annotations

import importlib.util
import os
import types

import ml_collections

from sslx import evaluators
from sslx.config_defaults import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    view_group,
)

# ---------------------------------------------------------------- recipes of recipes


def sibling_recipe(config_file: str, name: str) -> types.ModuleType:
    """The recipe file `name` beside `config_file` (a recipe's `__file__`), loaded by
    its path as `--config` loads it: for a recipe that is another with one change
    (a larger backbone), which calls that one's `get_config`."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
    spec = importlib.util.spec_from_file_location(os.path.splitext(name)[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- data and run length


def imagenet_data(config: ml_collections.ConfigDict) -> None:
    """ImageNet-1k from TFDS (prepared in the default data_dir) with the usual
    normalisation; evaluation resizes to 256 and center-crops the view size."""
    config.data.update(dict(
        source="tfds", name="imagenet2012", train_split="train", eval_split="validation",
        path="", image_size=256, cache=False, mean=IMAGENET_MEAN, std=IMAGENET_STD))


def cifar10_data(config: ml_collections.ConfigDict) -> None:
    """CIFAR-10 from TFDS (prepared in the default data_dir), whole split in memory."""
    config.data.update(dict(
        source="tfds", name="cifar10", train_split="train", eval_split="test", path="",
        image_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD, shuffle_buffer=50_000))


def imagenet(config: ml_collections.ConfigDict, model: str, *, batch_size: int,
             epochs: float, checkpoint_every: int = 2500) -> None:
    """An ImageNet run: `imagenet_data`, the backbone `model` (a ResNet with its
    ImageNet stem), `batch_size` images a step for `epochs` epochs."""
    imagenet_data(config)
    config.model.name = model
    config.model.stem = "imagenet"
    _length(config, batch_size, epochs, checkpoint_every)


def cifar10(config: ml_collections.ConfigDict, *, batch_size: int = 256,
            epochs: float = 1000.0, checkpoint_every: int = 5000) -> None:
    """A CIFAR-10 run: `cifar10_data` and a ResNet-18 with the CIFAR stem (3x3
    convolution, no max-pool); by default solo-learn's length (da Costa et al.
    2022, `scripts/pretrain/cifar/*.yaml`): batch 256, 1000 epochs."""
    cifar10_data(config)
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    _length(config, batch_size, epochs, checkpoint_every)


def _length(config: ml_collections.ConfigDict, batch_size: int, epochs: float,
            checkpoint_every: int) -> None:
    config.train.batch_size = batch_size
    config.train.epochs = epochs
    config.checkpoint.every_steps = checkpoint_every


# ---------------------------------------------------------------- views


def color_distortion(strength: float) -> dict[str, float]:
    """SimCLR's colour-jitter parameters at a given distortion strength
    (1.0 for ImageNet, 0.5 for CIFAR; Chen et al. 2020, Appendix A)."""
    return dict(brightness=0.8 * strength, contrast=0.8 * strength,
                saturation=0.8 * strength, hue=0.2 * strength)


def simclr_views(size: int, *, count: int = 2, crop_scale: tuple[float, float] = (0.08, 1.0),
                 strength: float = 1.0, blur_prob: float = 0.5,
                 crop_resize: str = "bicubic") -> ml_collections.ConfigDict:
    """SimCLR's augmentation (Chen et al. 2020, Appendix A), also SwAV's: random
    resized crop (bicubic in SimCLR's `data_util`; SwAV's torchvision default is
    bilinear), flip, colour distortion of `strength` with p 0.8, grayscale p 0.2,
    blur p `blur_prob` (a kernel a tenth of the side), no solarization; all crops alike."""
    return view_group(count=count, size=size, crop_scale=crop_scale, crop_resize=crop_resize,
                      jitter_prob=0.8, **color_distortion(strength), grayscale_prob=0.2,
                      blur_prob=blur_prob, solarize_prob=0.0)


def simsiam_views(size: int, *, blur_prob: float = 0.5) -> ml_collections.ConfigDict:
    """SimSiam's (MoCo v2's) pair (Chen & He 2021, Appendix A): crop 0.2-1, flip,
    colour jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, blur p `blur_prob`
    (PIL's, out to 3 sigma); both views alike."""
    return view_group(count=2, size=size, crop_scale=(0.2, 1.0), jitter_prob=0.8,
                      brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                      grayscale_prob=0.2, blur_prob=blur_prob, blur_kernel="three_sigma",
                      solarize_prob=0.0)


# BYOL's colour augmentation (Grill et al. 2020, Appendix B, Table 6), used by most
# recipes since: jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2.
BYOL_COLOUR = dict(jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                   grayscale_prob=0.2)


def byol_views(
    size: int,
    *,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    blur_prob: float | tuple[float, ...] = (1.0, 0.1),
    solarize_prob: float | tuple[float, ...] = (0.0, 0.2),
    crop_resize: str = "bicubic",
    blur_kernel: str = "tenth_of_side",
) -> ml_collections.ConfigDict:
    """BYOL's asymmetric pair (Grill et al. 2020, Appendix B, Table 6): one group of
    two crops resized bicubically, flip, `BYOL_COLOUR`, blur p 1.0 / 0.1 with a
    23-pixel kernel at 224 px (a tenth of the side) and solarization p 0 / 0.2 (a
    tuple gives view 1 and view 2 their own probability). solo-learn's CIFAR recipes
    take it without blur (`blur_prob=0.0`). The PyTorch code of Barlow Twins, VICReg
    and DINO blurs with PIL (`blur_kernel="three_sigma"`); MoCo v3 also keeps
    torchvision's bilinear crop (`crop_resize="bilinear"`)."""
    return view_group(count=2, size=size, crop_scale=crop_scale, crop_resize=crop_resize,
                      **BYOL_COLOUR, blur_prob=blur_prob, blur_kernel=blur_kernel,
                      solarize_prob=solarize_prob)


def dino_views(local_count: int, global_scale: tuple[float, float] = (0.4, 1.0),
               local_scale: tuple[float, float] = (0.05, 0.4)) -> ml_collections.ConfigDict:
    """DINO's multi-crop (Caron et al. 2021, Appendix A, BYOL's augmentations): 2 global
    crops of 224 px (`byol_views`: blur p 1.0 / 0.1, solarize p 0 / 0.2) and
    `local_count` local crops of 96 px (blur p 0.5); all with `BYOL_COLOUR` and flip,
    resized bicubically and blurred by PIL's Gaussian, as `DataAugmentationDINO`."""
    return ml_collections.ConfigDict(dict(
        global_crops=byol_views(224, crop_scale=global_scale, blur_kernel="three_sigma"),
        local_crops=view_group(count=local_count, size=96, crop_scale=local_scale,
                               **BYOL_COLOUR, blur_prob=0.5, blur_kernel="three_sigma",
                               crop_resize="bicubic", solarize_prob=0.0),
    ))


def supervised_views(size: int) -> ml_collections.ConfigDict:
    """The standard supervised training crop (torchvision's reference and DeiT's, less
    RandAugment and random erasing): one random resized crop 0.08-1, bilinear, and
    a flip; no colour, blur or solarization."""
    return view_group(count=1, size=size, crop_scale=(0.08, 1.0), crop_resize="bilinear",
                      flip_prob=0.5, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                      solarize_prob=0.0)


# ---------------------------------------------------------------- optimizers


def lars(config: ml_collections.ConfigDict, *, base_lr: float, weight_decay: float,
         min_lr: float = 0.0) -> None:
    """LARS as in SimCLR and BYOL (Chen et al. 2020, Appendix B.1; Grill et al. 2020,
    Appendix C): momentum 0.9, trust coefficient 1e-3, lr `base_lr` x B/256, 10
    warmup epochs then a cosine to `min_lr`, biases and BatchNorm parameters out of
    weight decay and LARS adaptation."""
    config.optim.update(dict(
        name="lars", base_lr=base_lr, lr_scaling="linear", min_lr=min_lr, warmup_epochs=10.0,
        weight_decay=weight_decay, momentum=0.9, exclude_bias_and_norm=True))


def simsiam_sgd(config: ml_collections.ConfigDict, *, base_lr: float,
                weight_decay: float) -> None:
    """SimSiam's SGD (Chen & He 2021, Sec. 4.2 and Appendix A): momentum 0.9, lr
    `base_lr` x B/256, cosine without warmup set once per epoch
    (`adjust_learning_rate`), weight decay on every parameter (PyTorch SGD), the
    predictor at the initial lr ("fix_lr")."""
    config.optim.update(dict(
        name="sgd", base_lr=base_lr, lr_scaling="linear", warmup_epochs=0.0,
        lr_per_epoch=True,
        weight_decay=weight_decay, momentum=0.9, exclude_bias_and_norm=False,
        constant_lr=("^predictor/",)))


def dino_optim(config: ml_collections.ConfigDict) -> None:
    """DINO's ViT optimisation (`main_dino.py` defaults): AdamW lr 0.0005 x B/256, 10
    warmup epochs, cosine to 1e-6, weight decay cosine 0.04 -> 0.4 (not on biases and
    norms, `utils.get_params_groups`), each gradient tensor clipped to norm 3.0
    (`utils.clip_gradients`), the head's last layer frozen during the first epoch."""
    config.optim.update(dict(
        name="adamw", base_lr=0.0005, lr_scaling="linear", min_lr=1e-6, warmup_epochs=10.0,
        weight_decay=0.04, weight_decay_end=0.4, grad_clip=3.0, grad_clip_mode="per_tensor",
        exclude_bias_and_norm=True))
    config.optim.frozen.last_layer = 1.0


def dino_vit(config: ml_collections.ConfigDict, model: str, *, patch_size: int,
             epochs: float) -> None:
    """A DINO-family ViT run on ImageNet (`main_dino.py` defaults, Appendix A): batch
    1024, drop-path 0.1, 2x224 + 10x96 crops (`dino_views`), `dino_optim`."""
    imagenet(config, model, batch_size=1024, epochs=epochs)
    config.views = dino_views(local_count=10)
    config.model.patch_size = patch_size
    config.model.drop_path = 0.1
    dino_optim(config)


def vit_supervised(config: ml_collections.ConfigDict, model: str, *, epochs: float,
                   base_lr: float, min_lr: float) -> None:
    """A supervised ViT/16 run on ImageNet as DeiT trains and MAE fine-tunes one: batch
    1024, drop-path 0.1, the standard crop (`supervised_views`), label smoothing 0.1,
    mixup 0.8 / CutMix 1.0, a trunc-normal head, AdamW lr `base_lr` x B/256 (wd
    0.05, not on biases and norms), 5 warmup epochs then a cosine to `min_lr`; the
    classifier's test accuracy at the end."""
    imagenet(config, model, batch_size=1024, epochs=epochs)
    config.model.patch_size = 16
    config.model.drop_path = 0.1
    config.views.global_crops = supervised_views(224)
    config.method.update(dict(label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0,
                              head_init="trunc_normal"))
    config.evals.classifier = evaluators.default_config("classifier")
    config.optim.update(dict(
        name="adamw", base_lr=base_lr, lr_scaling="linear", min_lr=min_lr, warmup_epochs=5.0,
        weight_decay=0.05, exclude_bias_and_norm=True))


def linear_protocol(config: ml_collections.ConfigDict, model: str, *, batch_size: int,
                    epochs: float, base_lr: float) -> None:
    """The papers' linear evaluation on ImageNet as a `supervised` run started from a
    pretrained one (MoCo's `main_lincls.py`, DINO's `eval_linear.py`): the backbone
    of the run `config.init.checkpoint` names, frozen in inference mode
    (`method.frozen_backbone`), under one BN-free Dense layer drawn from N(0, 0.01^2)
    with a zero bias; one random resized crop 0.08-1 (bilinear) and a flip; SGD
    momentum 0.9 without weight decay, lr `base_lr` x B/256, no warmup, a cosine to
    0 set once per epoch; the classifier's test accuracy at the end."""
    imagenet(config, model, batch_size=batch_size, epochs=epochs)
    config.views.global_crops = supervised_views(224)
    config.method.update(dict(frozen_backbone=True, head_init="normal_0.01"))
    config.init.parts = "backbone"
    config.evals.classifier = evaluators.default_config("classifier")
    config.optim.update(dict(
        name="sgd", base_lr=base_lr, lr_scaling="linear", min_lr=0.0, warmup_epochs=0.0,
        lr_per_epoch=True, weight_decay=0.0, momentum=0.9, exclude_bias_and_norm=False))


def mae_vit(config: ml_collections.ConfigDict, model: str, *, epochs: float) -> None:
    """MAE pre-training of a ViT/16 on ImageNet (He et al. 2022, Appendix A.1; the
    official PRETRAIN.md and `main_pretrain.py`): batch 4096, AdamW lr 1.5e-4 x B/256
    with betas (0.9, 0.95), weight decay 0.05 (not on biases and norms), 40 warmup
    epochs then a cosine to 0, no drop-path; MAE's init and fixed sin-cos positions;
    one random resized crop 0.2-1, bicubic, and a flip; the reconstruction picture
    at the end of the run."""
    imagenet(config, model, batch_size=4096, epochs=epochs)
    config.model.update(dict(patch_size=16, vit_init="mae", pos_embedding="sincos",
                             drop_path=0.0))
    config.views.global_crops = view_group(
        count=1, size=224, crop_scale=(0.2, 1.0), crop_resize="bicubic", flip_prob=0.5,
        jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
    config.optim.update(dict(
        name="adamw", base_lr=1.5e-4, lr_scaling="linear", min_lr=0.0, warmup_epochs=40.0,
        weight_decay=0.05, b1=0.9, b2=0.95, exclude_bias_and_norm=True))
    config.evals.reconstruction = evaluators.default_config("reconstruction")


def layer_decay(depth: int, decay: float) -> ml_collections.ConfigDict:
    """`config.optim.lr_multipliers` of layer-wise lr decay over a ViT backbone of
    `depth` blocks, as MAE's and BEiT's fine-tuning (`util/lr_decay.py`): block i
    learns at decay^(depth - i) of the lr, the patch projection, class token and
    positions at decay^(depth + 1), the final norm and the head at the full lr."""
    multipliers = {"^backbone/(patch_embed|cls_token|pos_embedding)": decay ** (depth + 1)}
    multipliers.update({f"^backbone/block{block}/": decay ** (depth - block)
                        for block in range(depth)})
    return ml_collections.ConfigDict(multipliers)


# ---------------------------------------------------------------- `:runlocal` overrides
# A recipe's own CPU-sized settings, applied after `config_defaults.runlocal`.


def linear_runlocal() -> dict:
    """The linear protocol: Fashion-MNIST's 10 classes, the cosine per step (once per
    epoch, it would stay at its peak for a run of one epoch)."""
    return {"method.num_classes": 10, "optim.lr_per_epoch": False}


def projector_runlocal() -> dict:
    """Barlow Twins and VICReg: a 512-wide projector."""
    return {"method.projector_hidden_dim": 512, "method.projector_dim": 512}


def predictor_runlocal() -> dict:
    """BYOL and MoCo v3: 512-wide heads to 128-d, 70 steps (four forward passes a
    step: ~5 CPU minutes)."""
    return {"method.projector_hidden_dim": 512, "method.projector_dim": 128,
            "method.predictor_hidden_dim": 512, "train.steps": 70}


def simsiam_runlocal() -> dict:
    """SimSiam: a 512-wide projector, a 128 bottleneck, 100 steps (~5 CPU minutes),
    its cosine per step (once per epoch, it would stay at its peak for a run shorter
    than one)."""
    return {"method.projector_hidden_dim": 512, "method.projector_dim": 512,
            "method.predictor_hidden_dim": 128, "train.steps": 100,
            "optim.lr_per_epoch": False}


def nnclr_runlocal() -> dict:
    """NNCLR: a 4096-entry support set, 512/1024-wide heads."""
    return {"method.queue_size": 4096, "method.projector_hidden_dim": 512,
            "method.predictor_hidden_dim": 1024}


def swav_runlocal() -> dict:
    """SwAV: 100 prototypes, a 512-wide projector, a 512-entry queue from epoch 0.1,
    prototypes frozen for 0.05 epochs, 60 steps."""
    return {
        "method.num_prototypes": 100,
        "method.projector_hidden_dim": 512,
        "method.queue_length": 512,
        "method.queue_start_epoch": 0.1,
        "optim.frozen.prototypes": 0.05,
        "optim.min_lr": 0.0,
        "train.steps": 60,
    }


def mae_runlocal() -> dict:
    """MAE: a 2-block, 128-wide decoder with 4 heads behind the 4-block ViT-T/4 (49
    patches of 28 px crops, 12 kept)."""
    return {"method.decoder_dim": 128, "method.decoder_depth": 2, "method.decoder_heads": 4}


def dino_runlocal() -> dict:
    """DINO-family recipes, sized for ~5 minutes on 2 CPU cores: 4 local crops of 12
    px next to the 2 global ones of 28 px, head 512-512-128 -> 1024, 70 steps of
    128; the phases the recipe counts in epochs (lr warm-up, frozen last layer,
    teacher temperature warm-up, here per step) and the teacher momentum shortened
    in proportion, for 70 steps instead of ~100k."""
    return {
        "views.local_crops.count": 4,
        "method.out_dim": 1024,
        "method.hidden_dim": 512,
        "method.bottleneck_dim": 128,
        "method.warmup_teacher_temp_epochs": 0.03,
        "method.teacher_temp_per_epoch": False,
        "method.momentum_teacher": 0.95,
        "optim.warmup_epochs": 0.02,
        "optim.frozen.last_layer": 0.02,
        "train.batch_size": 128,
        "train.steps": 70,
    }
