"""Optimizer recipes against numpy hand computations, plus every config error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers import synthetic_batch, tiny_config

from sslx import methods
from sslx.config_defaults import base_config
from sslx.errors import ConfigError
from sslx.methods.base import TrainLength
from sslx.optim import (
    LARS_TRUST_COEFFICIENT,
    build_optimizer,
    param_paths,
    scaled_learning_rate,
)

TOTAL_STEPS, STEPS_PER_EPOCH = 100, 10
_rng = np.random.default_rng(0)
PARAMS = {
    "layer": {"kernel": _rng.normal(size=(3, 4)), "bias": _rng.normal(size=(4,))},
    "head": {"kernel": _rng.normal(size=(4, 2)), "bias": _rng.normal(size=(2,))},
}
PARAMS = jax.tree.map(lambda x: x.astype(np.float32), PARAMS)
GRADS = jax.tree.map(lambda x: _rng.normal(size=x.shape).astype(np.float32), PARAMS)
ZEROS = jax.tree.map(np.zeros_like, PARAMS)


def optim_config(**fields) -> ml_collections.ConfigDict:
    """config.optim with no warmup and no lr scaling unless asked."""
    c = base_config().optim
    c.warmup_epochs = 0.0
    c.lr_scaling = "none"
    c.update(fields)
    return c


def build(c: ml_collections.ConfigDict, batch: int = 256):
    return build_optimizer(c, global_batch_size=batch, total_steps=TOTAL_STEPS,
                           steps_per_epoch=STEPS_PER_EPOCH)


def run_steps(opt, grads_per_step, params=PARAMS):
    """Jitted optimizer steps, one per grads tree: `[(params_before, updates), ...]`
    (updates compared directly, not through float32 params, keep small terms visible)."""
    update = jax.jit(opt.update)
    state, history = opt.init(params), []
    for grads in grads_per_step:
        updates, state = update(grads, state, params)
        history.append(jax.tree.map(np.asarray, (params, updates)))
        params = optax.apply_updates(params, updates)
    return history


def _apply(opt, grads, state, params):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def update_at(opt, step: int, grads, params=PARAMS):
    """The update at `step`, the state advanced by zero-gradient updates of fixed params."""
    state = opt.init(params)
    advance = jax.jit(lambda s: opt.update(ZEROS, s, params)[1])
    for _ in range(step):
        state = advance(state)
    return jax.tree.map(np.asarray, opt.update(grads, state, params)[0])


def cosine_lr(peak: float, k: int, floor: float = 0.0) -> float:
    return floor + (peak - floor) * (1 + np.cos(np.pi * k / TOTAL_STEPS)) / 2


def assert_tree_close(got, expected, rtol=1e-5, atol=1e-7):
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=rtol, atol=atol), got,
                 expected)


def test_param_paths():
    assert param_paths(PARAMS) == {
        "layer": {"kernel": "layer/kernel", "bias": "layer/bias"},
        "head": {"kernel": "head/kernel", "bias": "head/bias"},
    }
    assert param_paths({"projector": {"Dense_0": {"bias": 0}}}) == {
        "projector": {"Dense_0": {"bias": "projector/Dense_0/bias"}}}


def test_lars_two_steps_against_numpy():
    wd, momentum, lr0, floor = 0.1, 0.9, 0.5, 0.01
    opt, schedule = build(optim_config(name="lars", base_lr=lr0, weight_decay=wd,
                                       momentum=momentum, min_lr=floor))
    grads = [GRADS, jax.tree.map(lambda g: -0.5 * g, GRADS)]
    buf = jax.tree.map(np.zeros_like, PARAMS)
    for k, (g, (w, updates)) in enumerate(zip(grads, run_steps(opt, grads), strict=True)):
        lr = cosine_lr(lr0, k, floor)
        np.testing.assert_allclose(schedule(k), lr, rtol=1e-6)

        def adapted(g, w):
            if w.ndim == 1:  # biases: no weight decay, no trust ratio
                return g
            d = g + wd * w
            return LARS_TRUST_COEFFICIENT * np.linalg.norm(w) / np.linalg.norm(d) * d

        buf = jax.tree.map(lambda b, g, w, lr=lr: momentum * b + lr * adapted(g, w), buf, g, w)
        assert_tree_close(updates, jax.tree.map(np.negative, buf))


def test_adamw_decays_matrices_only():
    wd, lr = 0.05, 1e-3
    opt, _ = build(optim_config(name="adamw", base_lr=lr, weight_decay=wd, b1=0.9, b2=0.95))
    got = update_at(opt, 0, GRADS)
    adam = jax.tree.map(lambda g: g / (np.abs(g) + 1e-8), GRADS)  # bias-corrected first step
    expected = jax.tree.map(lambda a, w: -lr * (a + (wd * w if w.ndim > 1 else 0.0)), adam,
                            PARAMS)
    assert_tree_close(got, expected)


def test_sgd_is_l2_before_momentum():
    wd, momentum, lr0 = 0.05, 0.9, 0.05
    opt, _ = build(optim_config(name="sgd", base_lr=lr0, weight_decay=wd, momentum=momentum,
                                exclude_bias_and_norm=False))
    grads = [GRADS, GRADS]
    buf = jax.tree.map(np.zeros_like, PARAMS)
    for k, (g, (w, updates)) in enumerate(zip(grads, run_steps(opt, grads), strict=True)):
        # torch.optim.SGD(weight_decay=wd, momentum=momentum): decay on every param.
        buf = jax.tree.map(lambda b, g, w: momentum * b + g + wd * w, buf, g, w)
        assert_tree_close(updates, jax.tree.map(lambda b, k=k: -cosine_lr(lr0, k) * b, buf))


@pytest.mark.parametrize("scaling, batch, expected", [
    ("linear", 512, 0.2), ("linear", 128, 0.05), ("sqrt", 1024, 0.2), ("none", 4096, 0.1)])
def test_lr_scaling(scaling, batch, expected):
    assert scaled_learning_rate(0.1, scaling, batch) == pytest.approx(expected)
    c = optim_config(base_lr=0.1, lr_scaling=scaling, warmup_epochs=1.0)
    _, schedule = build(c, batch=batch)
    assert float(schedule(0)) == 0.0
    assert float(schedule(STEPS_PER_EPOCH // 2)) == pytest.approx(expected / 2)
    assert float(schedule(STEPS_PER_EPOCH)) == pytest.approx(expected)
    assert float(schedule(TOTAL_STEPS)) == pytest.approx(0.0, abs=1e-9)


def test_frozen_params_unchanged_then_trained_with_fresh_momentum():
    wd, momentum, lr0 = 0.1, 0.9, 0.1
    c = optim_config(name="sgd", base_lr=lr0, weight_decay=wd, momentum=momentum,
                     exclude_bias_and_norm=False)
    c.frozen["^head/"] = 0.2  # 2 steps at 10 steps per epoch
    opt, _ = build(c)
    history = run_steps(opt, [GRADS] * 3)
    for params, updates in history[:2]:
        assert_tree_close(params["head"], PARAMS["head"], rtol=0, atol=0)
        assert all(not u.any() for u in jax.tree.leaves(updates["head"]))
        assert all(u.all() for u in jax.tree.leaves(updates["layer"]))
    # First trained step: the momentum buffer is empty (no weight decay leaked into it).
    expected = jax.tree.map(lambda w, g: -cosine_lr(lr0, 2) * (g + wd * w), PARAMS["head"],
                            GRADS["head"])
    assert_tree_close(history[2][1]["head"], expected)


def test_adam_of_a_frozen_param_counts_from_its_unfreezing():
    """PyTorch's AdamW skips a param without gradient, so DINO's last layer takes its
    first Adam step (bias-corrected: lr in size) when its freeze ends, as a
    never-frozen param does at step 0. With one shared step count it would be
    (1 - b1) / (1 - b1^(n+1)) / sqrt((1 - b2) / (1 - b2^(n+1))) times that after n
    frozen steps: 0.52 here, 2.7 after DINO's 1251."""
    c = optim_config(name="adamw", base_lr=0.1, weight_decay=0.0)
    c.frozen["^head/"] = 0.5  # 5 steps
    opt, lr = build(c)
    history = run_steps(opt, [GRADS] * 7)
    assert all(not u.any() for _, updates in history[:5] for u in jax.tree.leaves(updates["head"]))
    first_trained = jax.tree.map(lambda u: u / float(lr(0)), history[0][1]["layer"])
    assert_tree_close(first_trained, jax.tree.map(lambda g: -np.sign(g), GRADS["layer"]),
                      rtol=1e-4)
    first_unfrozen = jax.tree.map(lambda u: u / float(lr(5)), history[5][1]["head"])
    assert_tree_close(first_unfrozen, jax.tree.map(lambda g: -np.sign(g), GRADS["head"]),
                      rtol=1e-4)


@pytest.mark.parametrize("name", ["adamw", "lars"])
def test_state_structure_does_not_depend_on_the_run_length(name):
    """A run restored without its training data (`sslx.load`, export, evaluation) builds
    its optimizer for `train.EMBED_ONLY`'s length: its state must have the structure
    the training run saved, also where a freeze is too short to last a step there."""
    c = optim_config(name=name, base_lr=0.1)
    c.frozen["^head/"] = 0.05
    c.frozen["kernel"] = 2.0
    structures = {
        str(jax.tree.structure(build_optimizer(
            c, global_batch_size=256, total_steps=10**6,
            steps_per_epoch=steps_per_epoch)[0].init(PARAMS)))
        for steps_per_epoch in (1, 10, 1251)}
    assert len(structures) == 1


def test_lr_per_epoch_changes_once_per_epoch():
    opt, lr = build(optim_config(name="sgd", base_lr=0.1, momentum=0.0, weight_decay=0.0,
                                 lr_per_epoch=True))
    np.testing.assert_allclose([float(lr(s)) for s in (0, 9)], [0.1, 0.1])
    np.testing.assert_allclose([float(lr(s)) for s in (10, 19)], [cosine_lr(0.1, 10)] * 2)
    history = run_steps(opt, [GRADS] * 12)
    assert_tree_close(history[11][1], jax.tree.map(lambda g: -cosine_lr(0.1, 10) * g, GRADS))


@pytest.mark.parametrize("epochs", [1e9, float("inf")])
def test_frozen_for_the_whole_run(epochs):
    c = optim_config(name="adamw", base_lr=1e-3, weight_decay=0.1)
    c.frozen = ml_collections.ConfigDict({".*layer/kernel.*": epochs}, allow_dotted_keys=True)
    opt, _ = build(c)
    for _, updates in run_steps(opt, [GRADS] * 3):
        assert not updates["layer"]["kernel"].any()
        assert updates["layer"]["bias"].all()


def test_constant_lr_keeps_peak_while_others_decay():
    peak, late = 0.2, 90
    opt, schedule = build(optim_config(name="sgd", base_lr=peak, momentum=0.0,
                                       weight_decay=0.0, constant_lr=("^head/",)))
    got = update_at(opt, late, GRADS)
    lr_late = cosine_lr(peak, late)
    assert lr_late < 0.1 * peak
    np.testing.assert_allclose(schedule(late), lr_late, rtol=1e-5)
    assert_tree_close(got["head"], jax.tree.map(lambda g: -peak * g, GRADS["head"]))
    assert_tree_close(got["layer"], jax.tree.map(lambda g: -lr_late * g, GRADS["layer"]))


def test_lr_multipliers_scale_matching_params_through_the_schedule():
    """Barlow Twins' bias/norm lr: the matching updates are `factor` times the plain
    recipe's at every step (biases get no decay or trust ratio, so their LARS update
    is linear in the lr), all others identical."""
    factor = 0.024
    plain = optim_config(name="lars", base_lr=0.2)
    scaled = optim_config(name="lars", base_lr=0.2)
    scaled.lr_multipliers["bias$"] = factor
    grads = [GRADS, jax.tree.map(lambda g: -0.5 * g, GRADS), GRADS]
    for (_, expected), (_, got) in zip(run_steps(build(plain)[0], grads),
                                       run_steps(build(scaled)[0], grads), strict=True):
        for name in PARAMS:
            np.testing.assert_allclose(got[name]["bias"], factor * expected[name]["bias"],
                                       rtol=1e-6)
            np.testing.assert_array_equal(got[name]["kernel"], expected[name]["kernel"])


def test_grad_clip_global_norm():
    lr = 0.1
    opt, _ = build(optim_config(name="sgd", base_lr=lr, momentum=0.0, weight_decay=0.0,
                                grad_clip=1.0))
    grads = jax.tree.map(lambda g: 10.0 * g, GRADS)
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in jax.tree.leaves(grads)))
    assert norm > 1.0
    assert_tree_close(update_at(opt, 0, grads), jax.tree.map(lambda g: -lr * g / norm, grads))


def test_weight_decay_cosine_schedule():
    lr, wd, wd_end = 1e-3, 0.04, 0.4  # DINO's 0.04 -> 0.4
    opt, _ = build(optim_config(name="adamw", base_lr=lr, min_lr=lr, weight_decay=wd,
                                weight_decay_end=wd_end))
    for step, wd_now in ((0, wd), (TOTAL_STEPS // 2, (wd + wd_end) / 2), (TOTAL_STEPS, wd_end)):
        got = update_at(opt, step, ZEROS)  # zero grads: the update is the decay alone
        expected = jax.tree.map(lambda w, d=wd_now: -lr * d * w if w.ndim > 1 else 0 * w,
                                PARAMS)
        assert_tree_close(got, expected)


@pytest.mark.parametrize("name", ["lars", "adamw", "sgd"])
def test_state_is_arrays_only_and_jits(name):
    c = optim_config(name=name, grad_clip=1.0, weight_decay_end=0.1, constant_lr=("head",))
    c.frozen["head/kernel"] = 0.1
    c.lr_multipliers["bias"] = 0.5
    opt, _ = build(c)
    abstract = jax.eval_shape(opt.init, PARAMS)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
    state = jax.jit(opt.init)(PARAMS)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
    params, state2 = jax.jit(lambda g, s, p: _apply(opt, g, s, p), donate_argnums=1)(
        GRADS, state, PARAMS)
    assert jax.tree.structure(state2) == jax.tree.structure(abstract)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("fields, match", [
    (dict(name="larss"), r"config\.optim\.name='larss'.*did you mean: lars"),
    (dict(lr_scaling="lineer"), r"config\.optim\.lr_scaling='lineer'.*did you mean: linear"),
    (dict(base_lr=-0.1), r"config\.optim\.base_lr=-0\.1 must be > 0"),
    (dict(base_lr=0.0), r"config\.optim\.base_lr=0\.0 must be > 0"),
    (dict(min_lr=-1e-6), r"config\.optim\.min_lr"),
    (dict(min_lr=1.0), r"config\.optim\.min_lr=1\.0 .*peak"),
    (dict(weight_decay=-1e-4), r"config\.optim\.weight_decay=-0\.0001 must be >= 0"),
    (dict(warmup_epochs=-1.0), r"config\.optim\.warmup_epochs=-1\.0 must be >= 0"),
    (dict(warmup_epochs=11.0), r"config\.optim\.warmup_epochs=11\.0 \(110 steps\) is longer"),
    (dict(name="sgd", momentum=1.0), r"config\.optim\.momentum=1\.0 must be in \[0, 1\)"),
    (dict(name="lars", momentum=-0.1), r"config\.optim\.momentum=-0\.1"),
    (dict(name="adamw", b1=1.5), r"config\.optim\.b1=1\.5"),
    (dict(name="adamw", b2=1.0), r"config\.optim\.b2=1\.0"),
    (dict(grad_clip=-1.0), r"config\.optim\.grad_clip=-1\.0 must be >= 0"),
    (dict(constant_lr=("[head",)), r"config\.optim\.constant_lr: '\[head' is not a valid regex"),
    (dict(frozen={"(head": 1.0}), r"config\.optim\.frozen: '\(head' is not a valid regex"),
    (dict(frozen={"head": -1.0}), r"config\.optim\.frozen\['head'\]=-1\.0 must be"),
    (dict(lr_multipliers={"bias": 0.0}), r"lr_multipliers\['bias'\]=0\.0 must be a factor > 0"),
    (dict(lr_multipliers={"bias": "x"}), r"lr_multipliers\['bias'\]='x' must be a factor"),
    (dict(lr_multipliers={"bias": float("nan")}), r"lr_multipliers\['bias'\]=nan must be"),
])
def test_config_errors(fields, match):
    with pytest.raises(ConfigError, match=match):
        build(optim_config(**fields))


def test_run_length_errors():
    with pytest.raises(ConfigError, match="total_steps=0"):
        build_optimizer(optim_config(), global_batch_size=256, total_steps=0, steps_per_epoch=1)
    with pytest.raises(ConfigError, match="global_batch_size=-1"):
        build_optimizer(optim_config(), global_batch_size=-1, total_steps=1, steps_per_epoch=1)


@pytest.mark.parametrize("field", ["frozen", "constant_lr", "lr_multipliers"])
def test_regex_matching_no_param_fails_at_init(field):
    c = optim_config(constant_lr=("predictor",) if field == "constant_lr" else ())
    if field in ("frozen", "lr_multipliers"):
        c[field]["predictor"] = 1.0
    opt, _ = build(c)
    with pytest.raises(ConfigError, match=rf"config\.optim\.{field}: regex 'predictor' matches "
                                          r"no parameter; param paths look like: head/bias"):
        jax.eval_shape(opt.init, PARAMS)


def test_decay_mask_over_a_dino_vit_reaches_no_bias_and_every_weight():
    """DINO's recipe on its ViT (learned last-layer scale `g`): with a zero gradient,
    AdamW's update is -lr * wd * w exactly where weight decay reaches. Official
    `get_params_groups` exempts every bias (Flax's attention biases are 2-D) and
    norm parameter, and decays everything else, the weight-norm scale included."""
    config = tiny_config("configs/dino_vits16.py", **{"model.name": "vit_t",
                                                      "model.patch_size": 4,
                                                      "method.norm_last_layer": False})
    method = methods.build(config, TrainLength(total_steps=10, steps_per_epoch=5))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    params, _ = method.init(jax.random.PRNGKey(0), batch)
    c = config.optim
    c.unlock()
    c.update(weight_decay=0.1, weight_decay_end=-1.0, warmup_epochs=0.0, frozen={})
    opt, schedule = build(c)
    updates = update_at(opt, 0, jax.tree.map(jnp.zeros_like, params), params)
    lr, paths = float(schedule(0)), jax.tree.leaves(param_paths(params))
    decayed = dict(zip(paths, jax.tree.leaves(updates), strict=True))
    names = {path.rsplit("/", 1)[-1] for path in paths}
    assert {"bias", "scale", "kernel", "g", "pos_embedding", "cls_token"} <= names
    assert any(np.ndim(update) == 2 for path, update in decayed.items()
               if path.endswith("query/bias"))
    for path, w in zip(paths, jax.tree.leaves(params), strict=True):
        exempt = path.rsplit("/", 1)[-1] in ("bias", "scale")
        np.testing.assert_allclose(decayed[path], 0.0 if exempt else -lr * 0.1 * np.asarray(w),
                                   rtol=1e-5, atol=1e-9, err_msg=path)


@pytest.mark.parametrize("mode", ["global", "per_tensor"])
def test_gradient_clipping(mode):
    """SGD without momentum or decay, clip 1.0: per tensor (DINO's clip_gradients),
    the tensor of norm 10 is scaled to norm 1 and the small ones are untouched;
    globally, every tensor is scaled by 1 / the global norm."""
    lr = 0.1
    opt, _ = build(optim_config(name="sgd", base_lr=lr, momentum=0.0, weight_decay=0.0,
                                grad_clip=1.0, grad_clip_mode=mode))
    unit = jax.tree.map(lambda g: g / np.linalg.norm(g), GRADS)
    grads = {"layer": {"kernel": 10 * unit["layer"]["kernel"],
                       "bias": 0.1 * unit["layer"]["bias"]},
             "head": jax.tree.map(lambda g: 0.2 * g, unit["head"])}
    global_norm = float(optax.global_norm(grads))
    scale = (lambda g: min(1.0, 1.0 / (np.linalg.norm(g) + 1e-6))) if mode == "per_tensor" \
        else (lambda g: 1.0 / global_norm)
    expected = jax.tree.map(lambda g: -lr * scale(g) * g, grads)
    assert_tree_close(update_at(opt, 0, grads), expected)


def test_bad_grad_clip_mode_is_named():
    with pytest.raises(ConfigError, match=r"config\.optim\.grad_clip_mode='norm'.*per_tensor"):
        build(optim_config(grad_clip=1.0, grad_clip_mode="norm"))
