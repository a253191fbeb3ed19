"""Blockwise masks: TF ops eagerly and in tf.data, bounds, seeds; the pipeline adds
them only where the method's inputs ask for them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import load_config

from sslx.data import masks, pipeline, sources
from sslx.data.spec import input_spec
from sslx.errors import ConfigError

GRID = (14, 14)
ASPECT = (0.3, 1 / 0.3)


def _mask(seed: int, prob: float = 1.0, ratio=(0.3, 0.3), grid=GRID) -> np.ndarray:
    return masks.block_mask(tf.constant([7, seed], tf.int64), grid, prob, ratio, ASPECT).numpy()


def test_block_mask_shape_and_ratio_bounds():
    counts = []
    for seed in range(12):
        m = _mask(seed)
        assert m.shape == GRID and m.dtype == np.bool_
        counts.append(m.sum())
    counts = np.array(counts)
    # Never more than r * N patches; blocks of >= (14 // 3)^2 = 16 patches, so never empty.
    assert np.all(counts <= 0.3 * 196) and np.all(counts >= 16)
    assert counts.mean() > 0.2 * 196  # blocks are added until close to the target


def test_probability_and_ratio_range():
    none = _mask(0, prob=0.0)
    assert not none.any()
    ratios = np.array([_mask(seed, prob=0.5, ratio=(0.1, 0.5)).mean() for seed in range(24)])
    masked = ratios[ratios > 0]
    assert 4 <= len(masked) <= 20  # about half of the images are masked
    assert masked.max() <= 0.5


def test_same_seed_same_mask_eagerly_and_in_tf_data():
    eager = [_mask(seed, prob=1.0, ratio=(0.1, 0.5), grid=(4, 4)) for seed in range(4)]
    assert np.array_equal(eager[0], _mask(0, prob=1.0, ratio=(0.1, 0.5), grid=(4, 4)))
    assert any(not np.array_equal(eager[0], other) for other in eager[1:])
    seeds = tf.data.Dataset.range(4).map(lambda s: tf.stack([tf.constant(7, tf.int64), s]))
    mapped = seeds.map(lambda s: masks.block_mask(s, (4, 4), 1.0, (0.1, 0.5), ASPECT))
    for got, want in zip(mapped.as_numpy_iterator(), eager, strict=True):
        np.testing.assert_array_equal(got, want)


def _config(with_masks: bool):
    config = load_config("configs/ibot_vits16.py", "runlocal")
    config.unlock()
    if not with_masks:
        del config["masks"]
    config.train.batch_size = 4
    return config


IBOT_INPUTS = ("views", "label", "masks")


@pytest.mark.parametrize("inputs", [IBOT_INPUTS, ("views", "label")])
def test_pipeline_emits_masks_only_when_asked(inputs):
    config = _config(with_masks=True)
    spec = input_spec(config)
    source = sources.from_arrays(np.full([8, 28, 28], 128, np.uint8), np.arange(8),
                                 process_index=0, process_count=1)
    batch = next(pipeline.train_iterator(config, spec, inputs=inputs, source=source))
    example = pipeline.example_batch(spec, 4, inputs=inputs)
    assert sorted(batch) == sorted(example) == sorted(inputs)
    if "masks" in inputs:
        # Two global 28 px crops, 4 px patches: 7 x 7 = 49 patches each.
        assert spec.masks == masks.MaskLayout(count=2, grid=(7, 7))
        assert len(batch["masks"]) == 2
        for m, e in zip(batch["masks"], example["masks"], strict=True):
            assert m.shape == e.shape == (4, 49) and m.dtype == e.dtype == np.bool_
            assert m.sum(axis=1).max() <= 0.5 * 49


def test_masks_follow_their_own_seed_stream():
    """The masks of an example are `make_masks` of its seed folded with the masks'
    stream; the views take the example's seed itself."""
    config = _config(with_masks=True)
    spec = input_spec(config)
    source = sources.from_arrays(np.full([4, 28, 28], 128, np.uint8), np.arange(4),
                                 process_index=0, process_count=1)
    batch = next(pipeline.train_iterator(config, spec, inputs=IBOT_INPUTS, source=source))
    for i in range(4):
        seed = tf.random.fold_in(tf.constant([config.seed, 0], tf.int64),
                                 tf.constant(i, tf.int64))  # the example's place in the stream
        want = masks.make_masks(tf.random.fold_in(seed, 1_000_003), spec.masks, config.masks)
        for got, expected in zip(batch["masks"], want, strict=True):
            np.testing.assert_array_equal(got[i], expected)


def test_mask_config_errors():
    config = _config(True)
    config.masks.ratio = (0.5, 0.1)
    with pytest.raises(ConfigError, match=r"config\.masks\.ratio"):
        input_spec(config)
    config = _config(True)
    config.model.patch_size = 5
    with pytest.raises(ConfigError, match="patch_size=5"):
        input_spec(config)
    config = _config(False)
    assert input_spec(config).masks is None
