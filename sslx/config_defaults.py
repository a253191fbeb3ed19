"""The one config schema every recipe starts from.

Recipes in `configs/` call `base_config(method=NAME)`, which holds every field a
run reads (the method's own fields are those it registers beside its code, see
`sslx.methods.register`), and change a handful of them, so every run has the same
keys and every key can be overridden from the command line with
`--config.a.b=value`. The schema's pieces (view groups, the `:runlocal` shrink)
live here; blocks of published recipes that several recipes share are in
`sslx.recipes`.
"""

from __future__ import annotations

import ml_collections

from sslx.errors import ConfigError, close_matches

FASHION_MNIST_IDX_DIR = "/usr/share/datasets/fashion-mnist"

# ImageNet statistics, the usual normalisation of every published recipe.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FASHION_MNIST_MEAN = (0.286, 0.286, 0.286)
FASHION_MNIST_STD = (0.353, 0.353, 0.353)


def view_group(count: int = 2, size: int = 224, **fields) -> ml_collections.ConfigDict:
    """`count` crops of one resolution, and the fields of the augmentation ops they
    go through (`sslx.data.augment.FIELDS`: crop_scale, crop_ratio, flip_prob,
    jitter_prob, brightness, ..., solarize_prob), each op's default where not given.

    A per-crop field (a float: probabilities, jitter strengths) may instead be a
    tuple with one value per crop (asymmetric recipes: BYOL blur (1.0, 0.1)), also
    on the command line (`--config.views.global_crops.blur_prob='(1.0,0.1)'` or
    `=0.5`); the (low, high) ranges (crop_scale, blur_sigma, ...) and the named
    choices (crop_resize, blur_kernel) are shared by the group's crops."""
    from sslx.data import augment  # here: the data package imports TensorFlow

    unknown = sorted(set(fields) - set(augment.FIELDS))
    if unknown:
        raise ConfigError(f"view_group() has no field {unknown[0]!r}"
                          f"{close_matches(unknown[0], augment.FIELDS)}")
    values = {name: fields.get(name, field.default) for name, field in augment.FIELDS.items()}
    return ml_collections.ConfigDict(dict(
        count=count,
        size=size,
        **{name: ml_collections.FieldReference(value, field_type=object)
           if isinstance(augment.FIELDS[name], augment.PerCrop) else value
           for name, value in values.items()},
    ))


def base_config(method: str = "simclr") -> ml_collections.ConfigDict:
    """Every field a run reads, with neutral defaults, and in `config.method` the
    fields `method` registers with their defaults (its published recipe); recipes
    override what differs.

    The sections of the schema are locked, so a misspelt field in a recipe fails
    where it is set, naming the closest fields. Open until `with_variant` locks the
    whole config: the top level (optional sections: `config.masks`), `config.views`
    (a recipe names its view groups), `config.evals` (a recipe adds evaluators) and
    the `{regex: value}` maps
    `config.optim.frozen` and `config.optim.lr_multipliers`."""
    from sslx import evaluators, methods, online_probe  # here: they import jax

    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict(dict(
        source="idx",                      # idx | tfds | folder | arrays | sample_photos
        name="fashion_mnist",              # TFDS builder name (source=tfds)
        path=FASHION_MNIST_IDX_DIR,        # IDX dir | folder root | .npz | TFDS data_dir
        train_split="train",
        eval_split="test",                 # k-NN queries / export default
        image_size=28,                     # nominal image side: views may not be larger;
                                           # eval resizes to size/0.875 + center crop if larger
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        shuffle_buffer=10_000,
        cache=True,                        # cache decoded images in memory
        threads=0,                         # tf.data private threadpool; 0 = cores // 2
        bad_images="fail",                 # folder files that do not decode: fail (name the
                                           # first, before training) | skip (drop, warn)
        augment_on="host",                 # host: tf.data makes the views | device: the
                                           # host crops (uint8), the train step does the
                                           # rest (sslx.data.device_augment)
    ))
    # View groups, ordered by descending size then name: views[0] is the
    # first crop of the largest group (the "global" crops of DINO/SwAV).
    c.views = ml_collections.ConfigDict(dict(global_crops=view_group()))

    c.model = ml_collections.ConfigDict(dict(
        name="resnet18",                   # resnet18|34|50, vit_t|vit_s|vit_b|vit_l
        stem="imagenet",                   # resnet: imagenet | cifar
        width=64,                          # resnet base width
        zero_init_residual=True,           # resnet: each block's last BN scale starts at 0
        patch_size=16,                     # vit
        depth=0,                           # vit blocks; 0 = the variant's (12, vit_l 24)
        num_heads=0,                       # vit attention heads; 0 = the variant's
        vit_init="trunc_normal",           # vit: trunc_normal (DINO, timm) | xavier (MoCo v3) | mae
        pos_embedding="learned",           # vit: learned | sincos
        drop_path=0.0,                     # vit stochastic depth rate
        remat=False,                       # vit: recompute each block's activations in the
                                           # backward pass (less memory, ~1/3 more compute)
        scan=False,                        # vit: blocks as one nn.scan over stacked params
                                           # (`blocks`, leading depth axis; faster compile)
    ))
    c.method = methods.default_config(method)

    c.optim = ml_collections.ConfigDict(dict(
        name="lars",                       # lars | adamw | sgd
        base_lr=0.3,                       # at the reference batch (see lr_scaling)
        lr_scaling="linear",               # linear: x B/256 | sqrt: x sqrt(B/256) | none
        min_lr=0.0,                        # cosine floor
        warmup_epochs=10.0,
        lr_per_epoch=False,                # True: the lr changes once per epoch (SimSiam)
        weight_decay=1e-6,
        weight_decay_end=-1.0,             # >= 0: cosine schedule from weight_decay to this
        momentum=0.9,
        b1=0.9,
        b2=0.999,
        grad_clip=0.0,                     # gradient norm clip; 0 = off
        grad_clip_mode="global",           # global: one norm | per_tensor: each tensor's
        exclude_bias_and_norm=True,        # biases, norm scales: no wd, no LARS adaptation
        exclude_from_decay=(),             # regexes of more params with no wd, no LARS
                                           # adaptation (SimCLR's fine-tuned head)
        frozen=ml_collections.ConfigDict(),  # {regex searched in param paths: epochs frozen}
        constant_lr=(),                    # regexes of params kept at the peak lr
        lr_multipliers=ml_collections.ConfigDict(),  # {regex: factor of the lr}
    ))

    c.train = ml_collections.ConfigDict(dict(
        batch_size=4096,                   # global, over all hosts and devices
        epochs=100.0,
        steps=-1,                          # > 0 overrides epochs
        log_every=50,
        dtype="float32",                   # float32 | bfloat16 compute
        param_sharding="replicated",       # replicated | fsdp (over config.mesh's fsdp axis)
        accumulation_steps=1,              # > 1: the batch as this many microbatches, one
                                           # update (per-example losses only: sslx.train)
        fsdp_min_size=2**16,               # fsdp: leaves this large (elements) are split
        fsdp_rules=(),                     # fsdp: regexes searched in leaf paths
                                           # ('params/backbone/block0/fc1/kernel'): split too
    ))
    # Device mesh: (axis, size) pairs over the axes data and fsdp, -1 = the remaining
    # devices, e.g. (("data", 4), ("fsdp", 2)). The batch is split over all axes,
    # parameters (param_sharding=fsdp) over fsdp (sslx.sharding).
    c.mesh = (("data", -1),)
    c.checkpoint = ml_collections.ConfigDict(dict(
        every_steps=1000,
        keep=3,
        directory="",                      # '' = WORKDIR/checkpoints; local, gs:// or s3://
    ))
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=512,                    # global batch of evaluators and export
        export_split="test",               # --mode=export's default --split
        export_at_end=True,                # write data.eval_split's embeddings after training
        export_shard_size=65536,           # rows per embeddings file each host streams to disk
    ))
    # Evaluators, {name: {type, every_steps, enabled, ...}} (see sslx.evaluators): each
    # runs every `every_steps` steps (0 or negative: only at the end) and at the end.
    # A recipe may add more: config.evals.NAME = evaluators.default_config(TYPE).
    c.evals = ml_collections.ConfigDict()
    c.evals.knn = evaluators.default_config("knn")  # eval_split against train_split
    c.evals.collapse = evaluators.default_config("collapse")  # std and RankMe of eval_split
    # Off during training; `--mode=evaluate --evals=linear_probe,low_label,pictures` runs them.
    c.evals.linear_probe = evaluators.default_config("linear_probe", enabled=False)
    c.evals.low_label = evaluators.default_config("low_label", enabled=False)
    c.evals.pictures = evaluators.default_config("pictures", enabled=False)  # PNGs in plots/
    # The eval-split accuracy of the online probe (needs config.online_probe.num_classes).
    c.evals.online_probe = evaluators.default_config("online_probe", enabled=False)
    # Another run's weights to start from, when this run starts fresh (no checkpoint
    # in its workdir): a workdir or a checkpoint directory; '' = random init.
    c.init = ml_collections.ConfigDict(dict(
        checkpoint="",
        parts="backbone",                  # backbone | all (every leaf whose path and shape match)
    ))
    # A linear classifier of the labels trained beside the network on its stop-gradient
    # features (sslx/online_probe.py); its eval-split accuracy is evals.online_probe's.
    c.online_probe = online_probe.default_config()  # num_classes=0: off
    for section in (c.data, c.model, c.method, c.optim, c.train, c.checkpoint, c.eval, c.init,
                    c.online_probe):
        section.lock()
    c.optim.frozen.unlock()
    c.optim.lr_multipliers.unlock()
    return c


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a recipe to a CPU-sized Fashion-MNIST run that keeps its method,
    losses, augmentations and optimizer; only data, sizes and durations change."""
    config.data.source = "idx"
    config.data.path = FASHION_MNIST_IDX_DIR
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.image_size = 28
    config.data.mean = FASHION_MNIST_MEAN
    config.data.std = FASHION_MNIST_STD
    config.data.shuffle_buffer = 10_000
    largest = max(g.size for g in config.views.values())
    for group in config.views.values():
        group.size = max(8, round(group.size * 28 / largest) // 4 * 4)
    if config.model.name.startswith("resnet"):
        config.model.name = "resnet18"
        config.model.stem = "cifar"
        config.model.width = 16
    else:
        config.model.name = "vit_t"
        config.model.patch_size = 4
        config.model.depth = 4
    config.train.batch_size = 256
    config.train.epochs = 1.0
    config.train.steps = -1
    config.train.log_every = 20
    config.checkpoint.every_steps = 100
    config.eval.batch_size = 512
    config.optim.warmup_epochs = min(config.optim.warmup_epochs, 0.1)
    return config


VARIANTS = {"runlocal": runlocal}


def set_field(config: ml_collections.ConfigDict, dotted_key: str, value) -> None:
    """`config.a.b = value` for `dotted_key='a.b'`."""
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        config = config[part]
    config[leaf] = value


def with_variant(config: ml_collections.ConfigDict, arg: str | None,
                 runlocal_overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Applies the comma-separated variants named in the config-file argument
    (`configs/x.py:runlocal`) and locks the config so a misspelt override fails.

    `runlocal_overrides` ({"method.projector_dim": 512, ...}) are a recipe's own
    CPU-sized settings (head widths, queue sizes), applied after `runlocal`."""
    names = list(filter(None, (arg or "").split(",")))
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"unknown config variant {name!r}; available: {', '.join(VARIANTS)}")
        config = VARIANTS[name](config)
    if "runlocal" in names:
        for key, value in (runlocal_overrides or {}).items():
            set_field(config, key, value)
    lock_all(config)
    return config


def lock_all(config: ml_collections.ConfigDict) -> None:
    """Locks `config` and every ConfigDict in it (`ConfigDict.lock` does not descend
    into a locked section, so it would leave the maps `base_config` opens unlocked)."""
    config.lock()
    for value in config.values():
        if isinstance(value, ml_collections.ConfigDict):
            lock_all(value)
