r"""Fine-tuning a pretrained ViT-B/16 on ImageNet's labels: MAE's end-to-end
fine-tuning protocol (He et al. 2022, Appendix A.3, Table 9; official
facebookresearch/mae `main_finetune.py`, `FINETUNE.md`).

    python -m sslx.main --config=configs/supervised_vitb_finetune.py \
        --config.init.checkpoint=PRETRAINED_WORKDIR --workdir=gs://BUCKET/ft_vitb

The backbone starts from the run `config.init.checkpoint` names (the weights it
embeds with: a DINO or iBOT teacher, a MoCo v3 encoder); the head starts fresh.
Batch 1024, AdamW lr 5e-4 x B/256 (betas 0.9, 0.999), weight decay 0.05 (not on
biases and norms), layer-wise lr decay 0.65, 5 warmup epochs then a cosine to
1e-6, 100 epochs, drop-path 0.1, label smoothing 0.1, mixup 0.8 and CutMix 1.0.
The head reads the class token, where MAE fine-tunes on the mean of the patch
tokens; RandAugment and random erasing are not offered (see docs/RECIPES.md).
Resumes like any run: re-running the command continues from the workdir's own
checkpoint, not from the pretrained one.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant

DEPTH = 12  # ViT-B
RUNLOCAL_DEPTH = 4  # config_defaults.runlocal's ViT


def get_config(arg=None):
    config = base_config(method="supervised")
    recipes.vit_supervised(config, "vit_b", epochs=100.0, base_lr=5e-4, min_lr=1e-6)
    config.optim.lr_multipliers = recipes.layer_decay(DEPTH, 0.65)
    config.init.parts = "backbone"
    return with_variant(config, arg, runlocal_overrides={
        "method.num_classes": 10,
        "optim.lr_multipliers": recipes.layer_decay(RUNLOCAL_DEPTH, 0.65)})
