"""Blockwise masks: TF ops eagerly and in tf.data, bounds, seeds; the pipeline adds
them only to recipes that ask for them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import load_config

from sslx.data import masks, pipeline, sources
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


@pytest.mark.parametrize("with_masks", [True, False])
def test_pipeline_emits_masks_only_when_configured(with_masks):
    config = _config(with_masks)
    source = sources.from_arrays(np.full([8, 28, 28], 128, np.uint8), np.arange(8),
                                 process_index=0, process_count=1)
    batch = next(pipeline.train_iterator(config, source=source))
    example = pipeline.example_batch(config, 4)
    assert sorted(batch) == sorted(example)
    if with_masks:
        # Two global 28 px crops, 4 px patches: 7 x 7 = 49 patches each.
        assert len(batch["masks"]) == 2
        for m, e in zip(batch["masks"], example["masks"], strict=True):
            assert m.shape == e.shape == (4, 49) and m.dtype == e.dtype == np.bool_
            assert m.sum(axis=1).max() <= 0.5 * 49
    else:
        assert "masks" not in batch


def test_mask_config_errors():
    config = _config(True)
    config.masks.ratio = (0.5, 0.1)
    with pytest.raises(ConfigError, match=r"config\.masks\.ratio"):
        pipeline.example_batch(config, 2)
    config = _config(True)
    config.model.patch_size = 5
    with pytest.raises(ConfigError, match="patch_size=5"):
        pipeline.example_batch(config, 2)
