"""Backbones and heads: shapes, parameter counts of the published architectures
(checked with `jax.eval_shape`, no compute), train/eval behaviour, and the
properties methods rely on (masking, weight-normalised DINO layer, unit
prototypes, config errors)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_tree_close

from sslx.config_defaults import base_config
from sslx.errors import ConfigError
from sslx.models import (
    DINOHead,
    MLPHead,
    Prototypes,
    ViT,
    build_backbone,
    feature_dim,
    names,
    normalize_prototypes,
)
from sslx.models import vit as vit_module

# Threefry-keyed inits take XLA:CPU seconds to compile per model; the rbg
# generator compiles in a fraction of that and exercises the same code. Every
# init/apply runs jitted as one program, which on CPU compiles faster than
# dispatching a network op by op.
KEY = jax.random.key(0, impl="rbg")


def rng(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")


def model_config(**fields):
    config = base_config().model
    config.update(fields)
    return config


def num_params(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def init(module, *args, **kwargs):
    return jax.jit(lambda *a: module.init(KEY, *a, **kwargs))(*args)


def abstract_init(module, *args, **kwargs):
    return jax.eval_shape(lambda *a: module.init(KEY, *a, **kwargs), *args)


def image_spec(size: int, batch: int = 1) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)


def images(batch: int = 4, size: int = 16, seed: int = 0) -> jax.Array:
    return jax.random.normal(rng(seed), (batch, size, size, 3))


def features(batch: int, dim: int) -> jax.Array:
    return jax.random.normal(rng(1), (batch, dim)) + jnp.arange(dim, dtype=jnp.float32)


def random_variables(module, *args, **kwargs):
    """Variables of `module`'s shapes with random weights and neutral BatchNorm
    statistics, for tests that do not check the init (whose compile costs seconds)."""
    gen = np.random.default_rng(0)

    def fill(path, leaf):
        if path[0].key == "batch_stats":
            return jnp.full(leaf.shape, 1.0 if path[-1].key == "var" else 0.0, leaf.dtype)
        return jnp.asarray(0.1 * gen.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract_init(module, *args, **kwargs))


@functools.cache
def tiny_resnet18():
    model = build_backbone(model_config(name="resnet18", stem="cifar", width=8), image_size=16)
    return model, init(model, images(), train=False)


def tiny_vit(**fields) -> ViT:
    fields = {"image_size": 32, "patch_size": 8, "hidden_dim": 16, "depth": 2,
              "num_heads": 2, **fields}
    return ViT(**fields)


@functools.cache
def tiny_vit_variables():
    """Initialised with a mask token, which ViTs built without one ignore."""
    return init(tiny_vit(use_mask_token=True), images(2, 32), train=False)


# ----------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize(("name", "stem"), [("resnet18", "cifar"), ("resnet50", "imagenet")])
def test_resnet_batch_stats_update_only_in_train(name, stem):
    model = build_backbone(model_config(name=name, stem=stem, width=8), image_size=16)
    variables = (tiny_resnet18()[1] if name == "resnet18"
                 else random_variables(model, image_spec(16), train=False))

    apply = jax.jit(lambda v, x, train: model.apply(v, x, train=train, mutable=["batch_stats"]),
                    static_argnums=2)

    out, updated = apply(variables, images(), True)
    assert out.shape == (4, 64 if name == "resnet18" else 256)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                           variables["batch_stats"], updated["batch_stats"])
    assert all(jax.tree.leaves(changed))
    if name == "resnet18":  # eval mode is the same code for every depth
        out, updated = apply(variables, images(), False)
        assert out.shape == (4, 64)
        unchanged = jax.tree.map(jnp.array_equal, variables["batch_stats"],
                                 updated["batch_stats"])
        assert all(jax.tree.leaves(unchanged))


def test_resnet50_parameter_count():
    model = build_backbone(model_config(name="resnet50"), image_size=224)
    params = abstract_init(model, image_spec(224), train=False)["params"]
    assert num_params(params) == 23_508_032  # torchvision resnet50 without its fc layer
    assert params["stage1_block1"]["conv2"]["kernel"].shape == (3, 3, 64, 64)
    assert params["stage4_block3"]["conv3"]["kernel"].shape == (1, 1, 512, 2048)


def test_resnet_init():
    _, variables = tiny_resnet18()
    block = variables["params"]["stage2_block1"]
    assert jnp.all(block["bn2"]["scale"] == 0)  # each block starts as the identity
    assert jnp.all(block["bn1"]["scale"] == 1) and jnp.all(block["proj_bn"]["scale"] == 1)
    # zero_init_residual=False (torchvision's default; DINO's and SwAV's ResNets): all ones.
    model = build_backbone(model_config(name="resnet50", stem="cifar", width=8,
                                        zero_init_residual=False), image_size=16)
    scales = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
        init(model, images(), train=False)["params"]) if path[-1].key == "scale"]
    assert len(scales) == 1 + 16 * 3 + 4 and all(jnp.all(scale == 1) for scale in scales)
    # He-normal, fan_out: std sqrt(2 / (3 * 3 * 16)) for the 3x3 conv to 16 channels.
    np.testing.assert_allclose(np.std(block["conv2"]["kernel"]), np.sqrt(2 / (9 * 16)),
                               rtol=0.1)


def test_resnet_bfloat16_compute_keeps_float32_params():
    _, variables = tiny_resnet18()
    bf16 = build_backbone(model_config(name="resnet18", stem="cifar", width=8), image_size=16,
                          dtype=jnp.bfloat16)
    dtypes = jax.tree.map(lambda a: a.dtype, abstract_init(bf16, image_spec(16), train=False))
    assert set(jax.tree.leaves(dtypes)) == {jnp.dtype(jnp.float32)}
    out, _ = jax.jit(lambda v, x: bf16.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, images())
    assert out.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(out, np.float32)))


# ----------------------------------------------------------------------------- ViT


@pytest.mark.parametrize(
    ("name", "expected"),
    [("vit_t", 5_524_416), ("vit_s", 21_665_664), ("vit_b", 85_798_656),
     ("vit_l", 303_301_632)],
)
def test_vit_parameter_counts(name, expected):
    # timm's vit_*_patch16_224 without the 1000-way head; counts include the class
    # token and 197 learned positions, and no mask token.
    def count(mask_token=False, **kwargs):
        model = build_backbone(model_config(name=name, **kwargs), image_size=224,
                               mask_token=mask_token)
        return abstract_init(model, image_spec(224), train=False)["params"]

    params = count()
    assert num_params(params) == expected
    assert params["patch_embed"]["kernel"].shape[:3] == (16, 16, 3)
    assert "mask_token" not in params
    dim = feature_dim(model_config(name=name))
    assert num_params(count(pos_embedding="sincos")) == expected - 197 * dim
    assert num_params(count(mask_token=True)) == expected + dim


@pytest.mark.parametrize("pos_embedding", ["learned", "sincos"])
def test_vit_accepts_other_resolutions(pos_embedding):
    model = tiny_vit(pos_embedding=pos_embedding)
    variables = tiny_vit_variables()
    apply = jax.jit(lambda x: model.apply(variables, x, train=False, return_tokens=True))
    for size in (32, 16):
        cls, tokens = apply(images(2, size))
        assert cls.shape == (2, 16)
        assert tokens.shape == (2, (size // 8) ** 2, 16)
        assert np.all(np.isfinite(tokens))
    with pytest.raises(ValueError, match="multiple of patch size"):
        apply(images(2, 20))


def test_vit_native_grid_skips_an_identity_resize(monkeypatch):
    pos = jnp.arange(16 * 3.0).reshape(16, 3)
    assert vit_module.resize_pos_embedding(pos, (4, 4), (4, 4)) is pos
    assert vit_module.resize_pos_embedding(pos, (4, 4), (2, 3)).shape == (6, 3)

    model = tiny_vit()
    x = images(2, 32)
    variables = tiny_vit_variables()
    apply = lambda: jax.jit(lambda x: model.apply(variables, x, train=False))(x)
    skipped = apply()

    def always_resize(pos, from_grid, to_grid):
        dim = pos.shape[-1]
        return jax.image.resize(pos.reshape(*from_grid, dim), (*to_grid, dim),
                                method="bicubic", antialias=False).reshape(-1, dim)

    monkeypatch.setattr(vit_module, "resize_pos_embedding", always_resize)
    np.testing.assert_allclose(skipped, apply(), atol=1e-6)


def test_vit_sincos_embedding_is_fixed():
    table = vit_module.sincos_2d(2, 3, 8)
    assert table.shape == (6, 8)
    # position (row 1, col 2): [sin(2w), cos(2w), sin(1w), cos(1w)], w = 1/10000^(i/2).
    omega = 1.0 / 10000.0 ** (np.arange(2) / 2)
    np.testing.assert_allclose(
        table[5], np.concatenate([np.sin(2 * omega), np.cos(2 * omega),
                                  np.sin(omega), np.cos(omega)]), rtol=1e-6)
    params = abstract_init(tiny_vit(pos_embedding="sincos"), image_spec(32), train=False)
    assert "pos_embedding" not in params["params"]


def test_vit_mask_hides_masked_patches():
    model = tiny_vit(use_mask_token=True)
    x = images(2, 32)
    variables = tiny_vit_variables()
    assert variables["params"]["mask_token"].shape == (1, 1, 16)
    run = jax.jit(lambda x, mask: model.apply(variables, x, train=False, mask=mask,
                                              return_tokens=True))

    no_mask = run(x, None)
    all_false = run(x, jnp.zeros((2, 16), bool))
    jax.tree.map(np.testing.assert_array_equal, no_mask, all_false)

    mask = jnp.zeros((2, 16), bool).at[:, 0].set(True)  # the top-left 8x8 patch
    masked = run(x, mask)
    assert not np.allclose(masked[0], no_mask[0])
    # The content of a masked patch no longer reaches any output ...
    jax.tree.map(np.testing.assert_array_equal, masked, run(x.at[:, :8, :8].add(1.0), mask))
    # ... while an unmasked patch still does.
    assert not np.allclose(run(x.at[:, 8:16, :8].add(1.0), mask)[0], masked[0])

    with pytest.raises(ValueError, match="use_mask_token"):
        abstract_init(tiny_vit(), x, train=False, mask=mask)
    with pytest.raises(ValueError, match="mask shape"):
        abstract_init(model, x, train=False, mask=mask[:, :4])


def test_vit_drop_path_only_in_train():
    x = images(4, 32)
    model = tiny_vit(drop_path=0.5)
    variables = tiny_vit_variables()

    @jax.jit
    def outputs(variables, x):
        return dict(
            plain=tiny_vit().apply(variables, x, train=False),
            eval=model.apply(variables, x, train=False),
            train_no_drop=tiny_vit().apply(variables, x, train=True),
            first=model.apply(variables, x, train=True, rngs={"dropout": rng(1)}),
            second=model.apply(variables, x, train=True, rngs={"dropout": rng(2)}),
        )

    out = outputs(variables, x)
    np.testing.assert_array_equal(out["eval"], out["plain"])
    np.testing.assert_array_equal(out["train_no_drop"], out["plain"])
    assert not np.allclose(out["first"], out["second"])
    assert not np.allclose(out["first"], out["plain"])


def test_vit_bfloat16_compute_keeps_float32_params():
    model = tiny_vit(dtype=jnp.bfloat16)
    variables = tiny_vit_variables()
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out = jax.jit(lambda x: model.apply(variables, x, train=False))(images(2, 16))
    assert out.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(out, np.float32)))


def stacked_blocks(params, depth: int) -> dict:
    """Unscanned ViT params with `block{i}` stacked into the scanned layout (`blocks`)."""
    params = dict(params)
    blocks = [params.pop(f"block{i}") for i in range(depth)]
    return {**params, "blocks": jax.tree.map(lambda *leaves: jnp.stack(leaves), *blocks)}


def test_vit_remat_gives_the_same_outputs_and_gradients():
    """Remat recomputes the blocks in the backward pass: same params, outputs and
    gradients (in train mode, with the same drop-path draws)."""
    x = images(4, 32)
    plain, remat = tiny_vit(depth=3, drop_path=0.3), tiny_vit(depth=3, drop_path=0.3, remat=True)
    variables = init(plain, x, train=False)
    assert jax.tree.structure(abstract_init(remat, x, train=False)) == jax.tree.structure(
        variables)

    def loss(model):
        def fn(variables):
            out = model.apply(variables, x, train=True, rngs={"dropout": rng(5)})
            return jnp.sum(out**2), out
        return jax.value_and_grad(fn, has_aux=True)

    (loss0, out0), grads0 = jax.jit(loss(plain))(variables)
    (loss1, out1), grads1 = jax.jit(loss(remat))(variables)
    np.testing.assert_allclose(out1, out0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    # Recomputed activations round differently in float32 (1e-4 of a gradient at
    # most); a lost drop-path mask or a missing branch differs by far more.
    assert_tree_close(grads1, grads0, "gradient", rtol=1e-3)


def test_vit_scan_equals_the_unscanned_blocks_stacked():
    """A scanned ViT's params are the unscanned ones with the blocks stacked on a
    leading depth axis, and given those it computes the same features and tokens;
    with remat too. Drop-path rates rise over depth as a scanned input, so training
    runs (its draws differ from the unscanned model's)."""
    x = images(4, 32)
    plain = tiny_vit(depth=3, drop_path=0.2)
    variables = init(plain, x, train=False)
    stacked = {"params": stacked_blocks(variables["params"], 3)}
    for model in (tiny_vit(depth=3, drop_path=0.2, scan=True),
                  tiny_vit(depth=3, drop_path=0.2, scan=True, remat=True)):
        shapes = abstract_init(model, x, train=False)
        assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, stacked)

        @jax.jit
        def outputs(model=model):
            return (plain.apply(variables, x, train=False, return_tokens=True),
                    model.apply(stacked, x, train=False, return_tokens=True),
                    model.apply(stacked, x, train=True, rngs={"dropout": rng(1)}))

        want, got, trained = outputs()
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        assert np.all(np.isfinite(trained)) and not np.allclose(trained, want[0])


@pytest.mark.parametrize("dtype, atol", [(jnp.float32, 2e-6), (jnp.bfloat16, 2e-2)])
def test_heads_first_attention_is_flax_attention(dtype, atol):
    """The ViT's attention core, heads ahead of tokens, against flax's own: the same
    outputs, gradients and sown weights, in float32 and bfloat16."""
    import flax.linen as nn

    q, k, v = (jax.random.normal(jax.random.key(i), (3, 17, 4, 8)) for i in range(3))
    got = vit_module.heads_first_attention(q, k, v, dtype=dtype)
    want = nn.dot_product_attention(q, k, v, dtype=dtype)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               atol=atol)
    grads = [jax.grad(lambda q, k, v, f=f: jnp.sum(jnp.sin(f(q, k, v))), argnums=(0, 1, 2))(
        q, k, v) for f in (vit_module.heads_first_attention, nn.dot_product_attention)]
    assert_tree_close(grads[0], grads[1], "gradient", rtol=1e-5)
    x = jax.random.normal(jax.random.key(3), (2, 5, 16))
    sown = []
    for attention_fn in (vit_module.heads_first_attention, nn.dot_product_attention):
        attention = nn.MultiHeadDotProductAttention(4, attention_fn=attention_fn)
        params = attention.init(jax.random.key(4), x)
        _, state = attention.apply(params, x, sow_weights=True, mutable=["intermediates"])
        sown.append(state["intermediates"]["attention_weights"][0])
    assert sown[0].shape == (2, 4, 5, 5)
    np.testing.assert_allclose(sown[0], sown[1], atol=1e-6)


def test_vit_scan_refuses_to_sow_attention():
    model = tiny_vit(scan=True)
    with pytest.raises(ConfigError, match=r"config\.model\.scan=True"):
        abstract_init(model, images(2, 32), train=False, sow_attention=True)


# ----------------------------------------------------------------------------- heads


def test_mlp_head_layers_and_output_norm():
    x = features(8, 12)
    head = MLPHead(hidden_dim=32, out_dim=6, num_layers=3, output_norm=True)
    variables = init(head, x, train=False)
    params = variables["params"]
    assert set(params) == {"dense0", "bn0", "dense1", "bn1", "dense2"}
    assert "bias" not in params["dense0"] and "bias" not in params["dense2"]  # BN follows
    assert "bn2" in variables["batch_stats"]  # affine-free output BN: statistics only

    out, _ = jax.jit(lambda v, x: head.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x)
    assert out.shape == (8, 6)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-3)

    def param_names(head):
        return jax.tree.map(lambda a: a.shape, abstract_init(head, x, train=False)["params"])

    assert set(param_names(MLPHead(32, 6, output_norm=True, output_norm_scale=True))["bn1"]) \
        == {"scale"}
    byol = param_names(MLPHead(hidden_dim=32, out_dim=6))
    assert set(byol) == {"dense0", "bn0", "dense1"} and "bias" in byol["dense1"]
    plain = param_names(MLPHead(32, 6, hidden_norm=False, use_bias=False))
    assert set(plain) == {"dense0", "dense1"} and "bias" not in plain["dense0"]


def test_dino_head_outputs_cosine_logits():
    x = features(4, 24)
    head = DINOHead(out_dim=40, hidden_dim=32, bottleneck_dim=8)
    params = init(head, x, train=False)["params"]
    assert set(params) == {"mlp", "last_layer"}
    assert set(params["last_layer"]) == {"v"}  # norm_last_layer: magnitude fixed at 1

    mlp = MLPHead(32, 8, num_layers=3, hidden_norm=False,
                  activation=lambda y: jax.nn.gelu(y, approximate=False))

    @jax.jit
    def logits_and_bottleneck(params, x):
        return (head.apply({"params": params}, x, train=False),
                mlp.apply({"params": params["mlp"]}, x, train=False))

    logits, bottleneck = logits_and_bottleneck(params, x)
    assert logits.shape == (4, 40)
    v = params["last_layer"]["v"]
    cosine = (bottleneck / np.linalg.norm(bottleneck, axis=1, keepdims=True)) @ (
        v / np.linalg.norm(v, axis=0, keepdims=True))
    np.testing.assert_allclose(logits, cosine, atol=1e-5)
    assert np.all(np.abs(logits) <= 1 + 1e-5)

    learned = DINOHead(out_dim=40, hidden_dim=32, bottleneck_dim=8, norm_last_layer=False)
    assert abstract_init(learned, x, train=False)["params"]["last_layer"]["g"].shape == (40,)


def test_dino_head_starts_where_the_official_one_does():
    """The MLP's Linears N(0, 0.02^2) (torch's trunc_normal_, whose +-2 bounds are
    absolute: not Flax's +-2 sigma cut with std 0.0176); the last layer's `v` as
    PyTorch's default Linear, U(+-1/sqrt(256)): its size sets how far each step turns it."""
    head = DINOHead(out_dim=4096, hidden_dim=512, bottleneck_dim=256)
    params = init(head, features(2, 384), train=False)["params"]
    np.testing.assert_allclose(np.std(params["mlp"]["dense0"]["kernel"]), 0.02, rtol=0.02)
    v = params["last_layer"]["v"]
    np.testing.assert_allclose(np.std(v), 1 / np.sqrt(3 * 256), rtol=0.01)
    assert np.abs(v).max() <= 1 / 16


@pytest.mark.parametrize("linear_init, kernel_std, bias_bound", [
    ("torch", 1 / np.sqrt(3 * 256), 1 / 16),  # U(+-1/sqrt(fan_in)), bias too
    ("haiku", 0.8796 / 16, 0.0),              # N(0, 1/fan_in) cut at 2 std, not rescaled
    ("normal_0.01", 0.01, 0.0),
    ("trunc_normal", 0.02, 0.0),
])
def test_mlp_head_linear_inits(linear_init, kernel_std, bias_bound):
    head = MLPHead(1024, 512, hidden_norm=False, linear_init=linear_init)  # both Dense biased
    params = init(head, features(2, 256), train=False)["params"]
    np.testing.assert_allclose(np.std(params["dense0"]["kernel"]), kernel_std, rtol=0.02)
    bias = params["dense0"]["bias"]
    assert np.abs(bias).max() <= bias_bound
    assert np.std(bias) >= bias_bound / 4


def test_mlp_head_hidden_width_zero_is_the_input_width():
    """SimCLR's head: hidden layers as wide as the backbone's features."""
    shapes = abstract_init(MLPHead(0, 6, num_layers=3), features(2, 12), train=False)["params"]
    assert shapes["dense0"]["kernel"].shape == (12, 12)
    assert shapes["dense1"]["kernel"].shape == (12, 12)
    assert shapes["dense2"]["kernel"].shape == (12, 6)


def _vit_s_params(**fields):
    model = build_backbone(model_config(name="vit_s", depth=1, **fields), image_size=32)
    return init(model, images(1, 32), train=False)["params"]


def test_vit_trunc_normal_init_is_timms():
    """DINO/iBOT (timm's `_init_weights`): every Linear and the learned positions
    N(0, 0.02^2), the patch convolution PyTorch's default U(+-1/sqrt(3*16*16))."""
    params = _vit_s_params(vit_init="trunc_normal")
    block = params["block0"]
    for kernel in (block["fc1"]["kernel"], block["fc2"]["kernel"],
                   block["attn"]["query"]["kernel"], block["attn"]["out"]["kernel"]):
        np.testing.assert_allclose(np.std(kernel), 0.02, rtol=0.03)
    np.testing.assert_allclose(np.std(params["pos_embedding"]), 0.02, rtol=0.1)
    patch = params["patch_embed"]["kernel"]
    np.testing.assert_allclose(np.std(patch), 1 / np.sqrt(3 * 768), rtol=0.02)
    assert np.abs(patch).max() <= 1 / np.sqrt(768)
    patch_bias = params["patch_embed"]["bias"]
    assert np.abs(patch_bias).max() <= 1 / np.sqrt(768) and np.std(patch_bias) > 0.01
    assert block["attn"]["query"]["kernel"].shape == (384, 6, 64)  # DeiT-S: 6 heads


def test_vit_xavier_init_is_mocov3s():
    """MoCo v3's `vits.py`: 12 heads for ViT-S, Xavier-uniform Linears with q, k and v
    each its own 384 x 384 matrix, the patch projection Xavier over its 768 pixels,
    the class token N(0, 1e-6^2)."""
    params = _vit_s_params(vit_init="xavier", num_heads=12, pos_embedding="sincos")
    attn, block = params["block0"]["attn"], params["block0"]
    assert attn["query"]["kernel"].shape == (384, 12, 32)
    for kernel, fan_in, fan_out in [(attn["query"]["kernel"], 384, 384),
                                    (attn["value"]["kernel"], 384, 384),
                                    (attn["out"]["kernel"], 384, 384),
                                    (block["fc1"]["kernel"], 384, 1536),
                                    (params["patch_embed"]["kernel"], 768, 384)]:
        bound = np.sqrt(6 / (fan_in + fan_out))
        np.testing.assert_allclose(np.std(kernel), bound / np.sqrt(3), rtol=0.03)
        assert np.abs(kernel).max() <= bound
    assert 0 < np.std(params["cls_token"]) < 3e-6
    assert not np.any(params["patch_embed"]["bias"])


def test_vit_mae_init_is_maes():
    """MAE's `initialize_weights`: Xavier-uniform Linears with q, k and v drawn as one
    384 x 1152 matrix, the patch projection Xavier over its 768 pixels with PyTorch's
    default bias, the class token N(0, 0.02^2)."""
    params = _vit_s_params(vit_init="mae", pos_embedding="sincos")
    attn, block = params["block0"]["attn"], params["block0"]
    for kernel, fan_in, fan_out in [(attn["query"]["kernel"], 384, 3 * 384),
                                    (attn["key"]["kernel"], 384, 3 * 384),
                                    (attn["out"]["kernel"], 384, 384),
                                    (block["fc2"]["kernel"], 1536, 384),
                                    (params["patch_embed"]["kernel"], 768, 384)]:
        bound = np.sqrt(6 / (fan_in + fan_out))
        np.testing.assert_allclose(np.std(kernel), bound / np.sqrt(3), rtol=0.03)
        assert np.abs(kernel).max() <= bound
    np.testing.assert_allclose(np.std(params["cls_token"]), 0.02, rtol=0.25)
    patch_bias = params["patch_embed"]["bias"]
    assert np.abs(patch_bias).max() <= 1 / np.sqrt(768) and np.std(patch_bias) > 0.01


def test_prototypes_are_unit_rows():
    x = features(4, 8)
    head = Prototypes(num_prototypes=10)
    params = init(head, x)["params"]
    assert params["prototypes"].shape == (10, 8)
    np.testing.assert_allclose(np.linalg.norm(params["prototypes"], axis=1), 1.0, rtol=1e-6)
    scores = jax.jit(lambda p, x: head.apply({"params": p}, x))(params, x)
    assert scores.shape == (4, 10) and np.all(np.abs(scores) <= 1 + 1e-6)

    tree = {"backbone": {"w": jnp.full((3,), 2.0)},
            "swav": {"prototypes": 3.0 * params["prototypes"]}}
    normalized = jax.jit(normalize_prototypes)(tree)
    np.testing.assert_allclose(np.linalg.norm(normalized["swav"]["prototypes"], axis=1), 1.0,
                               rtol=1e-6)
    np.testing.assert_array_equal(normalized["backbone"]["w"], tree["backbone"]["w"])
    with pytest.raises(ValueError, match="prototypes"):
        normalize_prototypes({"w": jnp.ones(3)})


# ----------------------------------------------------------------------------- build_backbone


@pytest.mark.parametrize(
    "fields",
    [{"name": name} for name in names()] + [{"name": "resnet18", "stem": "cifar"},
                                            {"name": "resnet50", "stem": "cifar"}],
    ids=lambda fields: "-".join(fields.values()),
)
def test_backbone_output_matches_feature_dim(fields):
    config = model_config(width=16, **fields)
    model = build_backbone(config, image_size=32)
    out = jax.eval_shape(lambda x: model.init_with_output(KEY, x, train=False)[0],
                         image_spec(32, batch=2))
    assert out.shape == (2, feature_dim(config)) == (2, model.feature_dim)
    if fields["name"].startswith("resnet"):
        assert model.feature_dim == (512 if fields["name"] == "resnet50" else 128)


@pytest.mark.parametrize(
    ("fields", "kwargs", "message"),
    [
        ({"name": "resnet5"}, {}, r"config\.model\.name='resnet5'.*resnet50.*available: resnet18"),
        ({"name": "vit_small"}, {}, r"config\.model\.name.*did you mean: vit_s"),
        ({"stem": "cifar10"}, {}, r"config\.model\.stem='cifar10'.*imagenet, cifar"),
        ({"width": 0}, {}, r"config\.model\.width"),
        ({"drop_path": 0.1}, {}, r"config\.model\.drop_path.*ViT"),
        ({"remat": True}, {}, r"config\.model\.remat=True.*ViT"),
        ({"scan": True}, {}, r"config\.model\.scan=True.*ViT"),
        ({}, {"mask_token": True}, r"config\.model\.name='resnet18'.*ViT"),
        ({"name": "vit_t", "pos_embedding": "sin"}, {}, r"config\.model\.pos_embedding.*sincos"),
        ({"name": "vit_t", "patch_size": 5}, {}, r"config\.model\.patch_size=5.*2, 4, 8, 16, 32"),
        ({"name": "vit_t", "drop_path": 1.0}, {}, r"config\.model\.drop_path"),
        ({"name": "vit_s", "num_heads": 5}, {},
         r"config\.model\.num_heads=5 must divide the width 384 of vit_s \(0 keeps its 6\)"),
        ({"name": "vit_t", "vit_init": "timm"}, {},
         r"config\.model\.vit_init='timm'.*trunc_normal, xavier"),
    ],
)
def test_build_backbone_errors_name_the_field(fields, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_backbone(model_config(**fields), image_size=32, **kwargs)


def test_feature_dim_unknown_name():
    with pytest.raises(ConfigError, match=r"config\.model\.name"):
        feature_dim(model_config(name="vgg16"))
