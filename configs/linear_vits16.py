r"""The papers' linear evaluation of a pretrained ViT-S/16 on ImageNet: DINO's
(Caron et al. 2021, Sec. 4.1 and Appendix; official facebookresearch/dino
`eval_linear.py` with its defaults: 77.0% top-1 for the 800-epoch DINO ViT-S/16).

    python -m sslx.main --config=configs/linear_vits16.py \
        --config.init.checkpoint=PRETRAINED_WORKDIR --workdir=gs://BUCKET/linear_vits16

The backbone of the run `config.init.checkpoint` names (DINO's and iBOT's teacher, the
trained network of the other methods) stays frozen in inference mode (no drop-path)
and no gradient reaches it (`method.frozen_backbone`), as `eval_linear.py` embeds
under `torch.no_grad()` with `model.eval()`; one Dense layer learns, from
N(0, 0.01^2) weights and a zero bias. Batch 1024, SGD momentum 0.9, no weight decay,
lr 0.001 x B/256 (0.004), no warmup, a cosine to 0 set once per epoch
(`CosineAnnealingLR` stepped per epoch), 100 epochs; one random resized crop 0.08-1
(bilinear) and a flip. The run ends with the classifier's test top-1 (`classifier
top-1`). The head reads the final class token after the last norm, where DINO's
ViT-S protocol concatenates the class tokens of the last 4 blocks (see
docs/RECIPES.md). The backbone's config must be the pretrained run's: for a MoCo v3
ViT-S add `--config.model.num_heads=12 --config.model.pos_embedding=sincos`, and its
CONFIG.md linear command's `--config.optim.base_lr=3 --config.train.epochs=90`.
`:runlocal` probes a 4-block ViT-T/4 on Fashion-MNIST's 10 classes, its cosine per step.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="supervised")
    recipes.linear_protocol(config, "vit_s", batch_size=1024, epochs=100.0, base_lr=0.001)
    config.model.patch_size = 16
    return with_variant(config, arg, runlocal_overrides=recipes.linear_runlocal())
