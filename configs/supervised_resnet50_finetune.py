r"""Fine-tuning a pretrained ResNet-50 end to end on ImageNet's labels: SimCLR's
protocol (Chen et al. 2020b, "Big Self-Supervised Models are Strong Semi-Supervised
Learners", fine-tuning; official google-research/simclr, the README's command for
fine-tuning the whole network and `tf2/model.py`, `tf2/lars_optimizer.py`,
`tf2/data.py`), on all the labels.

    python -m sslx.main --config=configs/supervised_resnet50_finetune.py \
        --config.init.checkpoint=PRETRAINED_WORKDIR --workdir=gs://BUCKET/ft_r50

The backbone starts from the run `config.init.checkpoint` names (the weights it embeds
with: DINO's and iBOT's teacher, the trained network of the others) and trains with
its BatchNorm in training mode (global statistics, as `--global_bn=True`); the head
reads the backbone's features (the projection head's input, `--ft_proj_selector=0`)
and starts at zero (`--zero_init_logits_layer=True`). Batch 1024, LARS momentum 0.9
(trust coefficient 1e-3), lr 0.005 x sqrt(B) = 0.16 (written 0.08 x sqrt(B/256)), no
warmup, a cosine to 0, no weight decay, 30 epochs (the paper's length for 10% and
100% of the labels; the README's command is the 60-epoch 1% one). Biases, BatchNorm
parameters and the head are left out of the LARS adaptation, as SimCLR's
`exclude_from_weight_decay=['batch_normalization', 'bias', 'head_supervised']`
leaves them (`optim.exclude_from_decay`). One random resized crop 0.08-1 (bicubic)
and a flip, no colour distortion (`color_jitter_strength=0` when fine-tuning). Ends
with the classifier's test top-1 (`classifier top-1`). Resumes like any run:
re-running the command continues from the workdir's own checkpoint, not from the
pretrained one. `:runlocal` fine-tunes a narrow ResNet-18 on Fashion-MNIST's 10 classes.
"""

from sslx import evaluators, recipes
from sslx.config_defaults import base_config, view_group, with_variant


def get_config(arg=None):
    config = base_config(method="supervised")
    recipes.imagenet(config, "resnet50", batch_size=1024, epochs=30.0)
    config.views.global_crops = view_group(
        count=1, size=224, crop_scale=(0.08, 1.0), crop_resize="bicubic", flip_prob=0.5,
        jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
    config.method.head_init = "zeros"
    config.init.parts = "backbone"
    config.evals.classifier = evaluators.default_config("classifier")
    config.optim.update(dict(
        name="lars", base_lr=0.08, lr_scaling="sqrt", min_lr=0.0, warmup_epochs=0.0,
        weight_decay=0.0, momentum=0.9, exclude_bias_and_norm=True,
        exclude_from_decay=("^head/",)))
    return with_variant(config, arg, runlocal_overrides={"method.num_classes": 10})
