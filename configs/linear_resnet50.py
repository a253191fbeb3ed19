r"""The papers' linear evaluation of a pretrained ResNet-50 on ImageNet: MoCo v3's
linear classification (Chen, Xie & He 2021; official facebookresearch/moco-v3
`main_lincls.py` with its defaults, the CONFIG.md "ResNet-50, linear classification"
command: 68.9 / 72.8 / 74.6% top-1 after 100 / 300 / 1000 pre-training epochs).

    python -m sslx.main --config=configs/linear_resnet50.py \
        --config.init.checkpoint=PRETRAINED_WORKDIR --workdir=gs://BUCKET/linear_r50

The backbone of the run `config.init.checkpoint` names (the weights it embeds with:
DINO's and iBOT's teacher, the trained network of the others) stays frozen in
inference mode, as `main_lincls.py` keeps `model.eval()` while training: BatchNorm
normalises with the pretrained running statistics and keeps them, no gradient
reaches the backbone, and the optimizer never moves it (`method.frozen_backbone`),
so its params and statistics stay bit-identical. One BN-free Dense layer
learns, from N(0, 0.01^2) weights and a zero bias. Batch 1024, SGD momentum 0.9, no
weight decay, lr 0.1 x B/256 (0.4), no warmup, a cosine to 0 set once per epoch, 90
epochs; one random resized crop 0.08-1 (bilinear) and a flip; the test images resized
to 256 and centre-cropped to 224. The run ends with the classifier's test top-1
(`classifier top-1`) beside the k-NN of the features, which is the pretrained run's:
the backbone is the same. Resumes like any run: re-running the command continues
from the workdir's own checkpoint, not from the pretrained one.

MoCo v1/v2's `main_lincls.py` (facebookresearch/moco README: 67.5% after 200 epochs of
MoCo v2) is batch 256, lr 30, 100 epochs with the lr divided by 10 at epochs 60 and
80: `--config.train.batch_size=256 --config.optim.base_lr=30 --config.train.epochs=100`
with this recipe's cosine instead of the steps. SimCLR (google-research/simclr) trains
its head with the LARS optimizer of its pre-training by default, which leaves the
head (`head_supervised`) out of the layer adaptation and of weight decay: momentum SGD
on the head in effect; its README's ImageNet command uses Nesterov momentum, lr
0.1 x B/256 at batch 4096 for 90 epochs from a zero head: `--config.train.batch_size=4096
--config.method.head_init=zeros`, without Nesterov (see docs/RECIPES.md). `:runlocal`
probes a narrow ResNet-18 on Fashion-MNIST's 10 classes, its cosine per step.
"""

from sslx import recipes
from sslx.config_defaults import base_config, with_variant


def get_config(arg=None):
    config = base_config(method="supervised")
    recipes.linear_protocol(config, "resnet50", batch_size=1024, epochs=90.0, base_lr=0.1)
    return with_variant(config, arg, runlocal_overrides=recipes.linear_runlocal())
