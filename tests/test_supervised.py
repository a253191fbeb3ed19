"""The supervised baseline: its loss against a numpy cross-entropy, mixup and CutMix
as timm applies them, labels required, its classifier's test accuracy, and
fine-tuning a pretrained ViT through the command line (layer-wise lr decay,
preempted and resumed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    SMALL_BACKBONE,
    end_to_end_config,
    load_config,
    preempt_cli,
    resume_cli,
    run_cli,
    synthetic_batch,
    tiny_config,
)

from sslx import evaluators, methods, recipes, train
from sslx.errors import ConfigError, DataError
from sslx.evaluators.classifier import correct_counts
from sslx.evaluators.embed import eval_batches
from sslx.methods.base import TrainLength
from sslx.methods.supervised import cutmix_mask, mix_batch


def _numpy_smoothed_cross_entropy(logits, labels, classes, smoothing):
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    target = np.full(logits.shape, smoothing / classes)
    target[np.arange(len(labels)), labels] += 1 - smoothing
    return -(target * log_p).sum(1)


def test_loss_is_smoothed_cross_entropy_over_labelled_images():
    config = tiny_config("configs/supervised_resnet50.py", **SMALL_BACKBONE,
                         **{"method.label_smoothing": 0.1})
    method = methods.build(config, TrainLength(total_steps=10, steps_per_epoch=5))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config))
    batch["label"] = batch["label"].at[:3].set(-1)  # unlabelled: left out
    params, state = method.init(jax.random.PRNGKey(0), batch)
    loss, (_, metrics) = method.loss(params, state, batch, jax.random.PRNGKey(1), 0)
    logits = method.network().apply({"params": params, **state}, batch["views"][0],
                                    train=True, mutable=["batch_stats"])[0]["logits"]
    labels = np.asarray(batch["label"])
    want = _numpy_smoothed_cross_entropy(logits[3:], labels[3:], 10, 0.1).mean()
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert float(metrics["labelled"]) == pytest.approx(13 / 16)


def test_mixup_mixes_images_and_targets_with_the_mirrored_batch():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(6, 8, 8, 3)), jnp.float32)
    targets = jax.nn.one_hot(jnp.arange(6) % 4, 4)
    mixed, mixed_targets, lam = mix_batch(images, targets, jax.random.PRNGKey(3),
                                          mixup_alpha=0.8, cutmix_alpha=0.0)
    assert 0 < float(lam) < 1
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], rtol=1e-6)
    np.testing.assert_allclose(mixed_targets, lam * targets + (1 - lam) * targets[::-1])
    np.testing.assert_allclose(mixed_targets.sum(1), 1.0, rtol=1e-6)
    same, same_targets, one = mix_batch(images, targets, jax.random.PRNGKey(3),
                                        mixup_alpha=0.0, cutmix_alpha=0.0)
    assert same is images and same_targets is targets and float(one) == 1.0


def test_cutmix_pastes_a_box_of_the_mirrored_batch_and_counts_its_area():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(4, 32, 32, 3)), jnp.float32)
    targets = jax.nn.one_hot(jnp.arange(4), 4)
    for seed in range(5):
        mixed, mixed_targets, lam = mix_batch(images, targets, jax.random.PRNGKey(seed),
                                              mixup_alpha=0.0, cutmix_alpha=1.0)
        from_mirror = np.all(np.isclose(mixed, images[::-1]), axis=(0, 3))
        from_self = np.all(np.isclose(mixed, images), axis=(0, 3))
        assert (from_mirror | from_self).all()  # every pixel from one of the two
        rows, cols = np.nonzero(from_mirror & ~from_self)
        if len(rows):  # a rectangle
            assert from_mirror[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert float(lam) == pytest.approx(1 - from_mirror.mean(), abs=1e-6)
        np.testing.assert_allclose(mixed_targets[:, :].sum(1), 1.0, rtol=1e-6)
    box = cutmix_mask(jax.random.PRNGKey(0), jnp.float32(0.75), 64, 64)
    assert float(box.sum()) <= 32 * 32 and float(box.sum()) > 0  # sides sqrt(1 - 0.75)


def test_unlabelled_training_data_is_refused_before_compiling(npz, tmp_path, monkeypatch):
    arrays = dict(np.load(npz))
    arrays["train_labels"][:] = -1
    unlabelled = str(tmp_path / "unlabelled.npz")
    np.savez(unlabelled, **arrays)
    monkeypatch.setattr(train, "make_train_step",
                        lambda run: lambda *a: pytest.fail("compiled"))
    config = tiny_config("configs/supervised_resnet50.py", npz=unlabelled)
    with pytest.raises(DataError, match=r"method 'supervised' learns from labels, but split "
                                        r"'train' has unlabelled images"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_layer_decay_follows_maes_param_groups():
    multipliers = recipes.layer_decay(12, 0.65).to_dict()
    assert multipliers["^backbone/block11/"] == pytest.approx(0.65)
    assert multipliers["^backbone/block0/"] == pytest.approx(0.65 ** 12)
    assert multipliers["^backbone/(patch_embed|cls_token|pos_embedding)"] == pytest.approx(
        0.65 ** 13)
    assert len(multipliers) == 13  # the norm and the head keep the full lr
    config = load_config("configs/supervised_vitb_finetune.py", "runlocal")
    assert len(config.optim.lr_multipliers) == config.model.depth + 1 == 5


def test_finetunes_a_pretrained_vit_and_resumes_through_the_command_line(npz, tmp_path,
                                                                         capsys):
    model = {**SMALL_BACKBONE, "model.depth": 4}  # the fine-tuning recipe's 4 runlocal blocks
    pretrained = str(tmp_path / "pretrained")
    run_cli("configs/simclr_resnet50.py", pretrained, npz, **model, **{
        "evals.knn.enabled": False, "evals.collapse.enabled": False,
        "eval.export_at_end": False})  # only its checkpoint is needed
    capsys.readouterr()
    path, workdir = "configs/supervised_vitb_finetune.py", str(tmp_path / "finetune")
    overrides = {**model, "init.checkpoint": pretrained}
    preempt_cli(path, npz, workdir, capsys, **overrides)
    resume_cli(path, npz, workdir, capsys, **overrides)
    # What the fine-tuning run took from the SimCLR run: its whole backbone.
    run = train.prepare(end_to_end_config(path, npz, **overrides), str(tmp_path / "plan"))
    source = train.open_init_source(run)
    source.saved.close()
    taken = {"/".join(map(str, path)) for path in source.plan.taken}
    assert taken and all("backbone" in path for path in taken)
    assert source.plan.considered == len(taken) and not source.plan.not_taken


def test_correct_counts_are_top_k_hits_of_the_counted_rows():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 50).astype(np.int32)
    counted = rng.random(50) < 0.8
    got = np.asarray(correct_counts(jnp.asarray(logits), jnp.asarray(labels),
                                    jnp.asarray(counted), (1, 3)))
    rank = (logits > logits[np.arange(50), labels][:, None]).sum(1)  # 0: the top logit
    assert got.tolist() == [int(((rank < 1) & counted).sum()), int(((rank < 3) & counted).sum()),
                            int(counted.sum())]


def test_classifier_accuracy_is_that_of_the_heads_predictions(npz, tmp_path):
    config = tiny_config("configs/supervised_resnet50.py", npz=npz, **SMALL_BACKBONE)
    run = train.prepare(config, str(tmp_path))
    state = run.init_state()
    section = evaluators.default_config("classifier")
    figures = evaluators.build("classifier", section, run).evaluate(state)
    logits, labels = [], []
    for images, label, valid in eval_batches(config, "test", run.spec, run.mesh):
        valid = np.asarray(valid)
        logits.append(np.asarray(run.method.classify(state.params, state.method_state,
                                                     images))[valid])
        labels.append(np.asarray(label)[valid])
    labels = np.concatenate(labels)
    assert len(labels) == 128
    predicted = np.argsort(-np.concatenate(logits), axis=1)
    assert figures["top1"] == pytest.approx(np.mean(predicted[:, 0] == labels), abs=1e-6)
    assert figures["top5"] == pytest.approx(np.mean((predicted[:, :5] == labels[:, None])
                                                    .any(1)), abs=1e-6)
    simclr = train.prepare(tiny_config(npz=npz, **SMALL_BACKBONE), str(tmp_path / "simclr"))
    with pytest.raises(ConfigError, match="has no `classify`"):
        evaluators.build("classifier", section, simclr)
