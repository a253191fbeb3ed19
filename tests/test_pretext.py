"""The pretext-task methods, rotation (RotNet) and jigsaw: their labels match the
transformations the pipeline applied (eagerly and through tf.data), the jigsaw
permutation set has the greedy's guarantees, the losses equal a numpy
cross-entropy on the network's outputs, gradients reach every part, and bad
settings are config errors."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from helpers import SMALL_BACKBONE, tiny_config

from sslx import methods
from sslx.data import pipeline, pretext, producers, sources
from sslx.data.spec import input_spec
from sslx.errors import ConfigError
from sslx.methods.base import TrainLength
from sslx.models import feature_dim

ROTATION = "configs/rotation_resnet50.py"
JIGSAW = "configs/jigsaw_resnet50.py"
LENGTH = TrainLength(total_steps=10, steps_per_epoch=5)


def _images(count: int, size: int) -> np.ndarray:
    """Random colour images: no two windows alike, no rotation symmetric."""
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), np.uint8)


def _batches(config, inputs: tuple[str, ...], images: np.ndarray) -> dict:
    """The first batch `pipeline.train_iterator` makes of `images`."""
    source = sources.from_arrays(images, process_index=0, process_count=1)
    return next(pipeline.train_iterator(config, input_spec(config), inputs=inputs,
                                        source=source))


def _produce_eagerly(config, name: str, image: np.ndarray, seed: int) -> dict:
    example = {"image": tf.constant(image), "label": tf.constant(0, tf.int32)}
    made = producers.produce((name,), example, tf.constant([seed, 0], tf.int64),
                             input_spec(config), config)
    return tf.nest.map_structure(lambda t: t.numpy(), made)


# ---------------------------------------------------------------- rotation labels


def _assert_rotations(views, labels) -> None:
    """View k is view 0 turned k quarter turns counter-clockwise, labelled k."""
    assert len(views) == len(labels) == 4
    for k, (view, label) in enumerate(zip(views, labels, strict=True)):
        np.testing.assert_array_equal(label, k)
        np.testing.assert_array_equal(view, np.rot90(views[0], k, axes=(-3, -2)))
        if k:
            assert not np.allclose(view, views[0])


def test_rotation_labels_match_rotations_eagerly():
    config = tiny_config(ROTATION)
    made = _produce_eagerly(config, "rotation", _images(1, 28)[0], seed=3)
    _assert_rotations(made["views"], made["rotation"])


def test_rotation_labels_match_rotations_in_the_pipeline():
    config = tiny_config(ROTATION, **{"train.batch_size": 4})
    batch = _batches(config, ("rotation",), _images(8, 28))
    assert set(batch) == {"views", "rotation"}
    _assert_rotations(batch["views"], batch["rotation"])


# ---------------------------------------------------------------- jigsaw labels


def _standardised(window: np.ndarray) -> np.ndarray:
    std = window.std()
    return (window - window.mean()) / (std if std > 0 else 1.0)


def _source_cells(views, crop: np.ndarray) -> list[int]:
    """For each tile, the grid cell of `crop` holding a window it equals once
    standardised (numpy); -1 where none does."""
    cell = crop.shape[0] // 3
    side = views[0].shape[0]
    found = []
    for view in views:
        matches = [n for n in range(9)
                   for dy, dx in itertools.product(range(cell - side + 1), repeat=2)
                   if np.allclose(view, _standardised(
                       crop[n // 3 * cell + dy:][:side, n % 3 * cell + dx:][:, :side]),
                       atol=1e-4)]
        found.append(matches[0] if len(set(matches)) == 1 else -1)
    return found


def _normalised(config, image: np.ndarray) -> np.ndarray:
    """The jigsaw recipe's crop of an image of the crop's size: the image itself
    (centred square of the whole image, no other augmentation), normalised."""
    return (image / 255.0 - np.asarray(config.data.mean)) / np.asarray(config.data.std)


def test_jigsaw_label_is_the_permutation_applied_eagerly():
    config = tiny_config(JIGSAW)
    size = config.views.global_crops.size
    perms = pretext.permutation_set(config.method.num_permutations,
                                    config.method.permutation_seed)
    image = _images(1, size)[0]
    labels = set()
    for seed in range(3):
        made = _produce_eagerly(config, "jigsaw", image, seed)
        assert len(made["views"]) == 9 and made["permutation"].dtype == np.int32
        assert made["views"][0].shape == (pretext.tile_size(size),) * 2 + (3,)
        assert _source_cells(made["views"], _normalised(config, image)) == list(
            perms[made["permutation"]])
        labels.add(int(made["permutation"]))
    assert len(labels) > 1


def test_jigsaw_label_is_the_permutation_applied_in_the_pipeline():
    config = tiny_config(JIGSAW, **{"train.batch_size": 4, "data.shuffle_buffer": 1})
    size = config.views.global_crops.size
    perms = pretext.permutation_set(config.method.num_permutations,
                                    config.method.permutation_seed)
    images = _images(4, size)
    batch = _batches(config, ("jigsaw",), images)
    assert set(batch) == {"views", "permutation"}
    for i in range(4):  # unshuffled: the batch holds the images in order
        views = [view[i] for view in batch["views"]]
        cells = _source_cells(views, _normalised(config, images[i]))
        assert cells == list(perms[batch["permutation"][i]])


# ---------------------------------------------------------------- permutation set


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[:, None, :] != b[None, :, :]).sum(-1)


def test_permutation_set_is_far_apart_and_reproducible():
    perms = pretext.permutation_set(40, 7)
    assert perms.shape == (40, 9) and perms.dtype == np.int32
    assert (np.sort(perms, axis=1) == np.arange(9)).all()
    distances = _hamming(perms, perms)
    np.fill_diagonal(distances, 10)
    separation = distances.min()
    assert len({tuple(p) for p in perms}) == 40 and separation >= 2
    # Max-min greedy: no permutation left out lies farther than `separation` from
    # the set (or it would have been picked before the last one).
    everything = np.array(list(itertools.permutations(range(9))), np.int8)
    nearest = np.full(len(everything), 10)
    for p in perms:
        nearest = np.minimum(nearest, (everything != p).sum(1))
    assert nearest.max() <= separation
    assert np.array_equal(pretext.permutation_set.__wrapped__(40, 7), perms)
    assert not np.array_equal(pretext.permutation_set(40, 8), perms)


def test_permutation_set_can_hold_every_order():
    assert sorted(map(tuple, pretext.permutation_set(24, 0, num_tiles=4))) == sorted(
        itertools.permutations(range(4)))


# ---------------------------------------------------------------- losses and gradients


def _numpy_cross_entropy(logits, labels) -> float:
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def _rotation_batch(config) -> dict:
    rng = np.random.default_rng(1)
    size, batch = config.views.global_crops.size, config.train.batch_size
    view = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    return {"views": tuple(jnp.asarray(np.rot90(view, k, axes=(1, 2))) for k in range(4)),
            "rotation": tuple(jnp.full(batch, k, jnp.int32) for k in range(4))}


def _jigsaw_batch(config) -> dict:
    rng = np.random.default_rng(2)
    side, batch = pretext.tile_size(config.views.global_crops.size), config.train.batch_size
    return {"views": tuple(jnp.asarray(rng.normal(size=(batch, side, side, 3)), jnp.float32)
                           for _ in range(9)),
            "permutation": jnp.asarray(rng.integers(0, config.method.num_permutations, batch),
                                       jnp.int32)}


@pytest.mark.parametrize("path, make_batch, stack", [
    (ROTATION, _rotation_batch, lambda views: jnp.concatenate(views, 0)),
    (JIGSAW, _jigsaw_batch, lambda views: jnp.stack(views, 1))])
def test_loss_is_cross_entropy_of_the_network_and_trains_every_part(path, make_batch, stack):
    config = tiny_config(path, **SMALL_BACKBONE)
    method = methods.build(config, LENGTH)
    method.check_config()
    batch = make_batch(config)
    params, state = jax.jit(method.init)(jax.random.PRNGKey(0), batch)
    rng, step = jax.random.PRNGKey(1), jnp.zeros((), jnp.int32)

    (loss, (_, metrics)), grads = jax.jit(jax.value_and_grad(method.loss, has_aux=True))(
        params, state, batch, rng, step)
    outputs, _ = jax.jit(lambda p, s, x: method.network().apply(
        {"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"]))(
        params, state["batch_stats"], stack(batch["views"]))
    logits = np.asarray(outputs["logits"])
    labels = (np.repeat(np.arange(4), config.train.batch_size) if path == ROTATION
              else np.asarray(batch["permutation"]))
    assert logits.shape[1] == (4 if path == ROTATION else config.method.num_permutations)
    np.testing.assert_allclose(loss, _numpy_cross_entropy(logits, labels), rtol=1e-5)
    np.testing.assert_allclose(metrics["top1"], (logits.argmax(1) == labels).mean(), atol=1e-6)

    for part in grads:  # backbone, head (and jigsaw's fc6)
        norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads[part])]
        assert all(np.isfinite(norms)) and sum(norms) > 0, part
    # Whole images at the evaluation size, whatever the size of the views trained on.
    images = jnp.zeros((2, method.spec.eval_size, method.spec.eval_size, 3))
    assert jax.jit(method.embed)(params, state, images).shape == (2, feature_dim(config.model))


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize("path, overrides, field", [
    (ROTATION, {"views.global_crops.count": 2}, "config.views"),
    (JIGSAW, {"views.global_crops.count": 2}, "config.views"),
    (JIGSAW, {"method.num_permutations": 1}, "config.method.num_permutations"),
    (JIGSAW, {"method.num_permutations": 362881}, "config.method.num_permutations"),
    (JIGSAW, {"method.tile_dim": 0}, "config.method.tile_dim"),
    (JIGSAW, {"method.permutation_seed": -1}, "config.method.permutation_seed"),
    (JIGSAW, {"views.global_crops.size": 2}, "config.views.global_crops.size"),
])
def test_bad_settings_are_config_errors(path, overrides, field):
    method = methods.build(tiny_config(path, **overrides), LENGTH)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        method.check_config()
