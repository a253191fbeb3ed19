"""Every recipe in configs/, as published and as `:runlocal`, loads, passes its
method's config checks, and (where its data is on this machine) prepares a run."""

from __future__ import annotations

import os

import pytest
from helpers import REPO, load_config

from sslx import methods, train
from sslx.data import sources
from sslx.methods.base import TrainLength

CONFIGS = sorted(name for name in os.listdir(os.path.join(REPO, "configs"))
                 if name.endswith(".py"))


def test_every_method_has_a_recipe():
    recipes = {load_config(f"configs/{name}").method.name for name in CONFIGS}
    assert recipes == set(methods.names())


@pytest.mark.parametrize("name", CONFIGS)
def test_recipe_and_runlocal_check_and_prepare(name, tmp_path):
    """The published recipe builds its method and passes check_config (its TFDS data,
    when it has some, is not here, so only recipes on local data prepare a run);
    `:runlocal` reads Fashion-MNIST (colorization: RGB patches of scikit-learn's
    sample photos, Fashion-MNIST has no colour) and prepares a run (shapes only, no
    compile)."""
    path = f"configs/{name}"
    full = load_config(path)
    method = methods.build(full, TrainLength(total_steps=1000, steps_per_epoch=100))
    method.check_config()
    if full.data.source != "tfds":
        train.prepare(full, str(tmp_path / "full"))

    runlocal = load_config(path, "runlocal")
    local_data = "sample_photos" if full.method.name == "colorization" else "idx"
    assert runlocal.data.source == local_data and runlocal.method.name == full.method.name
    run = train.prepare(runlocal, str(tmp_path / "runlocal"))
    examples = sources.num_examples(runlocal.data, "train")
    assert examples == {"idx": 60000, "sample_photos": 4096}[local_data]
    assert run.length.steps_per_epoch == examples // runlocal.train.batch_size
    assert run.length.total_steps > 0
    assert type(run.method) is type(method)


DINO_FAMILY = ("dino_resnet50.py", "dino_vitb.py", "dino_vits16.py", "dino_vits8.py",
               "ibot_vits16.py")


@pytest.mark.parametrize("name, field, value", [
    # utils.clip_gradients: each tensor's norm to 3.0.
    *[(name, "optim.grad_clip_mode", "per_tensor") for name in DINO_FAMILY],
    # torchvision's default (DINO) and zero_init_residual=False (SwAV).
    ("dino_resnet50.py", "model.zero_init_residual", False),
    ("swav_resnet50.py", "model.zero_init_residual", False),
    ("simclr_resnet50.py", "model.zero_init_residual", True),
    # apex LARC over every parameter (main_swav.py), SwAV's own ResNet.
    ("swav_resnet50.py", "optim.exclude_bias_and_norm", False),
    ("swav_resnet18_cifar10.py", "optim.exclude_bias_and_norm", False),
    ("swav_resnet18_cifar10.py", "model.zero_init_residual", False),
    # DDP averages 16 GPUs' shares of the gradient (barlowtwins main.py).
    ("barlow_twins_resnet50.py", "method.loss_scale", 1 / 16),
    # tf2 add_contrastive_loss: mean(loss_a + loss_b).
    ("simclr_resnet50.py", "method.loss_scale", 2.0),
    ("simclr_resnet18_cifar10.py", "method.loss_scale", 2.0),
    # tf2 projection head: hidden layers as wide as the backbone (512 for ResNet-18).
    ("simclr_resnet18_cifar10.py", "method.projector_hidden_dim", 0),
    # The README's ResNet-50 command on main_dino.py's defaults: 8 x 64 images, 8 local crops.
    ("dino_resnet50.py", "train.batch_size", 512),
    ("dino_resnet50.py", "views.local_crops.count", 8),
    # barlowtwins main.py: --weight-decay default 1e-6.
    ("barlow_twins_resnet50.py", "optim.weight_decay", 1e-6),
    # moco-v3 vits.py: 12 heads, Xavier-uniform Linears, class token N(0, 1e-6^2).
    ("mocov3_vits.py", "model.num_heads", 12),
    ("mocov3_vits.py", "model.vit_init", "xavier"),
    ("mocov3_vitb.py", "model.vit_init", "xavier"),
    *[(name, "model.vit_init", "trunc_normal") for name in DINO_FAMILY[1:]],
    # Crops resized as the official code does: bicubic (RandomResizedCrop(...,
    # interpolation=BICUBIC), SimCLR's and BYOL's tf.image.resize, solo-learn) or
    # torchvision's default bilinear (MoCo v3, SimSiam, SwAV).
    *[(name, f"views.{group}.crop_resize", "bicubic") for name in DINO_FAMILY
      for group in ("global_crops", "local_crops")],
    *[(f"{name}.py", "views.global_crops.crop_resize", "bicubic") for name in (
        "barlow_twins_resnet50", "vicreg_resnet50", "byol_resnet50", "nnclr_resnet50",
        "simclr_resnet50", "simclr_resnet18_cifar10", "barlow_twins_resnet18_cifar10",
        "byol_resnet18_cifar10", "mocov3_resnet18_cifar10", "nnclr_resnet18_cifar10",
        "vicreg_resnet18_cifar10", "swav_resnet18_cifar10")],
    *[(f"{name}.py", "views.global_crops.crop_resize", "bilinear") for name in (
        "mocov3_resnet50", "mocov3_vits", "simsiam_resnet50", "swav_resnet50")],
    ("swav_resnet50.py", "views.local_crops.crop_resize", "bilinear"),
    # PIL's GaussianBlur in the PyTorch code; a kernel a tenth of the side in the TF code.
    *[(name, f"views.{group}.blur_kernel", "three_sigma") for name in DINO_FAMILY
      for group in ("global_crops", "local_crops")],
    *[(f"{name}.py", "views.global_crops.blur_kernel", "three_sigma") for name in (
        "barlow_twins_resnet50", "vicreg_resnet50", "mocov3_resnet50", "mocov3_vits",
        "simsiam_resnet50")],
    *[(name, "views.global_crops.blur_kernel", "tenth_of_side")
      for name in ("simclr_resnet50.py", "byol_resnet50.py")],
    # Schedules the official code sets once per epoch.
    *[(name, "optim.lr_per_epoch", True)
      for name in ("simsiam_resnet50.py", "simsiam_resnet18_cifar10.py")],
    *[(name, "method.teacher_temp_per_epoch", True) for name in DINO_FAMILY],
])
def test_recipe_takes_its_official_codes_choice(name, field, value):
    config = load_config(f"configs/{name}")
    for key in field.split("."):
        config = config[key]
    assert config == value
