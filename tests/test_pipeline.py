"""Views from config and the per-host train/eval pipelines (tiny npz data)."""

from __future__ import annotations

import dataclasses
import itertools

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from sslx import config_defaults
from sslx.data import augment, pipeline, producers, sources, views
from sslx.data.spec import input_spec
from sslx.errors import ConfigError, DataError

NUM_TRAIN = 40
INPUTS = ("views", "label")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """Gray 16x16 train images with labels 0..39; 11 RGB test images filled with their index."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("arrays") / "tiny.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 256, [NUM_TRAIN, 16, 16], np.uint8),
        train_labels=np.arange(NUM_TRAIN),
        test_images=np.broadcast_to(np.arange(11, dtype=np.uint8)[:, None, None, None],
                                    [11, 16, 16, 3]),
        test_labels=np.arange(11),
    )
    return path


def _config(npz, **view_groups):
    config = config_defaults.base_config()
    config.data.source, config.data.path = "arrays", str(npz)
    config.data.image_size = 16
    config.data.shuffle_buffer = 16
    config.data.threads = 1
    config.train.batch_size = 8
    config.views = ml_collections.ConfigDict(
        view_groups or {"global_crops": config_defaults.view_group(size=12)}
    )
    return config


def _take(iterator, n: int) -> list[dict]:
    return list(itertools.islice(iterator, n))


def _train(config, inputs=INPUTS, **kwargs):
    return pipeline.train_iterator(config, input_spec(config), inputs=inputs, **kwargs)


# ---------------------------------------------------------------- views


def test_view_order_by_size_then_name():
    specs = views.view_specs(ml_collections.ConfigDict({
        "local": config_defaults.view_group(count=2, size=12),
        "b_global": config_defaults.view_group(count=1, size=28),
        "a_global": config_defaults.view_group(count=2, size=28),
    }))
    assert [(s.group, s.index, s.size) for s in specs] == [
        ("a_global", 0, 28), ("a_global", 1, 28), ("b_global", 0, 28),
        ("local", 0, 12), ("local", 1, 12),
    ]


def test_per_crop_tuples():
    groups = config_defaults.base_config().views
    groups.global_crops = config_defaults.view_group(blur_prob=(1.0, 0.1), solarize_prob=(0, 0.2))
    first, second = views.view_specs(groups)
    assert (first.blur_prob, second.blur_prob) == (1.0, 0.1)
    assert (first.solarize_prob, second.solarize_prob) == (0.0, 0.2)
    assert first.brightness == second.brightness == 0.4
    assert first.crop_scale == (0.08, 1.0)


@pytest.mark.parametrize("field, value, message", [
    ("blur_prob", (1.0, 0.1, 0.5),
     "config.views.global_crops.blur_prob has 3 values for count=2"),
    ("crop_scale", (0.0, 1.0), r"config.views.global_crops.crop_scale=\(0.0, 1.0\) must lie"),
    ("crop_scale", (0.8, 0.2), "low 0.8 is above high 0.2"),
    ("flip_prob", 1.5, r"config.views.global_crops.flip_prob=1.5 must lie within \[0.0, 1.0\]"),
    ("count", 0, "config.views.global_crops.count=0 must be a positive integer"),
])
def test_bad_view_config(field, value, message):
    groups = config_defaults.base_config().views
    groups.global_crops = config_defaults.view_group(**{field: value})
    with pytest.raises(ConfigError, match=message):
        views.view_specs(groups)


def test_misspelt_view_field():
    groups = config_defaults.base_config().views
    groups.global_crops.blur_porb = 0.5
    with pytest.raises(ConfigError, match=r"blur_porb is not a view-group field.*blur_prob"):
        views.view_specs(groups)
    with pytest.raises(ConfigError, match=r"view_group\(\) has no field 'blur_porb'.*blur_prob"):
        config_defaults.view_group(blur_porb=0.5)


def test_view_fields_come_from_the_augmentation_registry():
    """A view group holds count, size and the fields of the registered ops, with their
    defaults; `ViewSpec` has one attribute per field."""
    group = config_defaults.view_group()
    assert ("count", "size", *augment.FIELDS) == views.GROUP_FIELDS
    assert set(group) == set(views.GROUP_FIELDS)
    assert {name for op in augment.OPS.values() for name in op.fields} == set(augment.FIELDS)
    assert [f.name for f in dataclasses.fields(augment.ViewSpec)] == [
        *augment.VIEW_FIELDS, *augment.FIELDS]
    for name, field in augment.FIELDS.items():
        assert group[name] == field.default
    [first, _] = views.view_specs(ml_collections.ConfigDict({"g": group}))
    assert {name: getattr(first, name) for name in augment.FIELDS} == {
        name: field.default for name, field in augment.FIELDS.items()}


# ---------------------------------------------------------------- train


def test_train_batches(npz):
    iterator = _train(_config(npz), process_index=1, process_count=2)
    for batch in _take(iterator, 12):  # 12 local batches of 4 = more than one epoch of 20
        assert set(batch) == {"views", "label"}
        assert isinstance(batch["views"], tuple) and len(batch["views"]) == 2
        for view in batch["views"]:
            assert view.shape == (4, 12, 12, 3) and view.dtype == np.float32
        assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
        assert set(batch["label"]) <= set(range(20, 40))  # host 1's half of the split
        assert not np.array_equal(batch["views"][0], batch["views"][1])


def test_multi_crop(npz):
    config = _config(
        npz,
        global_crops=config_defaults.view_group(count=2, size=16),
        local_crops=config_defaults.view_group(count=4, size=8, crop_scale=(0.05, 0.4)),
    )
    [batch] = _take(_train(config, process_index=0, process_count=1), 1)
    assert [v.shape for v in batch["views"]] == [(8, 16, 16, 3)] * 2 + [(8, 8, 8, 3)] * 4


def test_train_is_reproducible_and_resumes_the_same_stream(npz):
    config = _config(npz)
    make = lambda start: _train(config, start_step=start, process_index=0, process_count=1)
    # 5 batches an epoch: resumed at the start of epoch 1 and in the middle of epoch 2.
    first, again = _take(make(0), 17), _take(make(0), 17)
    resumed = _take(make(5), 12) + _take(make(13), 4)
    for a, b in zip(first + first[5:] + first[13:], again + resumed, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
        for va, vb in zip(a["views"], b["views"], strict=True):
            np.testing.assert_array_equal(va, vb)
    # Epochs are reshuffled: the stream does not repeat the first epoch's order.
    epoch = NUM_TRAIN // config.train.batch_size
    assert not all(np.array_equal(first[i]["label"], first[i + epoch]["label"])
                   for i in range(epoch))


def test_resuming_late_reads_at_most_one_epoch():
    """The order of an epoch is a function of (seed, host, epoch): resuming in epoch 50
    skips the 50 epochs before it by arithmetic instead of reading them again."""
    reads = tf.Variable(0, dtype=tf.int64)

    def counted(example):
        reads.assign_add(1)
        return example

    images = np.zeros([NUM_TRAIN, 16, 16], np.uint8)
    source = sources.from_arrays(images, np.arange(NUM_TRAIN), process_index=0, process_count=1)
    source = dataclasses.replace(source, dataset=source.dataset.map(counted))
    config = _config(None)
    steps_per_epoch = NUM_TRAIN // config.train.batch_size
    batches = _train(config, start_step=50 * steps_per_epoch + 3, source=source)
    next(batches)
    # The 3 batches of epoch 50 before the start, the batch, and what prefetching took.
    assert 4 * config.train.batch_size <= int(reads.numpy()) < 3 * NUM_TRAIN


def test_train_from_arrays_source(npz):
    source = sources.from_arrays(np.zeros([6, 10, 10], np.uint8), process_index=0, process_count=1)
    [batch] = _take(_train(_config(npz), source=source), 1)
    assert batch["views"][0].shape == (8, 12, 12, 3) and (batch["label"] == -1).all()


def test_train_config_errors(npz):
    with pytest.raises(ConfigError, match=r"batch_size=8 must be a positive multiple of the 3"):
        _train(_config(npz), process_index=0, process_count=3)
    config = _config(npz)
    config.train.batch_size = 64
    with pytest.raises(ConfigError, match="batch_size=64 is larger than the 40 examples"):
        pipeline.steps_per_epoch(config)
    config.data.source = "nowhere"
    with pytest.raises(DataError, match="unknown data source"):
        _train(config, process_index=0, process_count=1)


def test_example_batch_is_the_structure_the_pipeline_yields(npz):
    config = _config(
        npz,
        global_crops=config_defaults.view_group(count=2, size=16),
        local_crops=config_defaults.view_group(count=3, size=8),
    )
    [batch] = _take(_train(config, process_index=0, process_count=1), 1)
    example = pipeline.example_batch(input_spec(config), 8, inputs=INPUTS)
    tf.nest.assert_same_structure(batch, example)
    for got, want in zip(tf.nest.flatten(batch), tf.nest.flatten(example), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype and not want.any()


def test_inputs_choose_the_producers(npz):
    config = _config(npz)
    [batch] = _take(_train(config, inputs=("views",), process_index=0, process_count=1), 1)
    assert set(batch) == {"views"}
    with pytest.raises(ConfigError, match=r"no producer makes the input 'view'.*views"):
        _train(config, inputs=("view", "label"), process_index=0, process_count=1)
    with pytest.raises(ConfigError, match="no producer makes the input 'view'"):
        pipeline.example_batch(input_spec(config), 2, inputs=("view",))
    with pytest.raises(ConfigError, match=r"reads masks, but the config has no config\.masks"):
        _train(config, inputs=(*INPUTS, "masks"), process_index=0, process_count=1)


def test_a_new_producer_is_one_registration_on_its_own_seed_stream(npz, monkeypatch):
    """A pretext input (a label of random quarter turns) added by registering a
    producer: batches and `example_batch` carry it, and the other inputs are unchanged."""
    monkeypatch.setattr(producers, "_REGISTRY", dict(producers._REGISTRY))

    @producers.producer("quarter_turns", stream=4,
                        outputs=lambda spec: {"quarter_turns": tf.TensorSpec([], tf.int32)})
    def rotation(example, seed, spec, config):
        del example, spec, config
        return {"quarter_turns": tf.random.stateless_uniform([], seed, 0, 4, tf.int32)}

    with pytest.raises(ValueError, match="stream 4 is 'quarter_turns'"):
        producers.producer("other", stream=4, outputs=lambda spec: {})(rotation)
    config = _config(npz)
    # A producer that makes other dtypes or shapes than it declares is refused.
    producers.producer("misdeclared", stream=5, outputs=lambda spec: {
        "quarter_turns": tf.TensorSpec([1], tf.int32)})(rotation)
    with pytest.raises(ValueError, match=r"make .*quarter_turns.* but declare .*shape=\(1,\)"):
        _train(config, inputs=(*INPUTS, "misdeclared"), process_index=0, process_count=1)
    run = lambda inputs: _take(_train(config, inputs=inputs, process_index=0, process_count=1), 3)
    plain, rotated = run(INPUTS), run((*INPUTS, "quarter_turns"))
    rotations = np.concatenate([batch["quarter_turns"] for batch in rotated])
    assert rotations.dtype == np.int32 and set(rotations) == {0, 1, 2, 3}
    for a, b in zip(plain, rotated, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
        for va, vb in zip(a["views"], b["views"], strict=True):
            np.testing.assert_array_equal(va, vb)
    example = pipeline.example_batch(input_spec(config), 8,
                                     inputs=(*INPUTS, "quarter_turns"))
    assert example["quarter_turns"].shape == (8,) and example["quarter_turns"].dtype == np.int32


def test_sources_yield_the_example_spec(npz):
    for split in ("train", "test"):
        config = _config(npz)
        dataset = sources.load_split(config.data, split, process_index=0, process_count=1).dataset
        assert set(dataset.element_spec) == set(sources.EXAMPLE_SPEC)
        for key, spec in sources.EXAMPLE_SPEC.items():
            assert spec.is_compatible_with(dataset.element_spec[key]), (split, key)


def test_steps_per_epoch(npz):
    assert pipeline.steps_per_epoch(_config(npz)) == NUM_TRAIN // 8


# ---------------------------------------------------------------- eval


def test_eval_pads_every_host_to_the_same_batches(npz):
    """11 examples over 2 hosts (5 + 6), global batch 4: 3 batches of 2 per host."""
    config = _config(npz)
    hosts = [
        list(pipeline.eval_iterator(config, "test", batch_size=4, size=16, process_index=i,
                                    process_count=2))
        for i in range(2)
    ]
    assert [len(batches) for batches in hosts] == [3, 3]
    labels = []
    for batches in hosts:
        for batch in batches:
            assert batch["image"].shape == (2, 16, 16, 3) and batch["image"].dtype == np.float32
            assert batch["label"].dtype == np.int32 and batch["valid"].dtype == bool
            labels += batch["label"][batch["valid"]].tolist()
            assert (batch["label"][~batch["valid"]] == -1).all()
    assert labels == list(range(11))  # fixed order, each example once
    first = hosts[0][0]["image"][1]  # example 1: every pixel 1/255, normalised
    expected = (1 / 255 - np.array(config.data.mean)) / np.array(config.data.std)
    np.testing.assert_allclose(first, np.broadcast_to(expected, first.shape), rtol=1e-5)


def test_eval_resize_and_center_crop(npz):
    config = _config(npz)
    [resized] = pipeline.eval_iterator(config, "test", batch_size=11, size=8,
                                       process_index=0, process_count=1)
    config.data.image_size = 32  # larger than size: resize to 16 / 0.875, crop 16
    [cropped] = pipeline.eval_iterator(config, "test", batch_size=11, size=16,
                                       process_index=0, process_count=1)
    assert resized["image"].shape == (11, 8, 8, 3) and cropped["image"].shape == (11, 16, 16, 3)
    assert resized["valid"].all() and cropped["valid"].all()


def test_folder_of_variable_sized_jpegs(tmp_path):
    """Decoded images of different sizes: crops and the eval center crop fix the shape."""
    for i, (h, w) in enumerate([(20, 30), (33, 17), (24, 24), (40, 21)]):
        image = tf.cast(tf.fill([h, w, 3], 40 * i), tf.uint8)
        path = tmp_path / "train" / f"class{i % 2}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_jpeg(image).numpy())
    config = _config(tmp_path)
    config.data.source, config.data.image_size, config.train.batch_size = "folder", 24, 4
    [batch] = _take(_train(config, process_index=0, process_count=1), 1)
    assert [v.shape for v in batch["views"]] == [(4, 12, 12, 3)] * 2
    assert sorted(batch["label"]) == [0, 0, 1, 1]
    [evaluated] = pipeline.eval_iterator(config, "train", batch_size=4, size=16,
                                         process_index=0, process_count=1)
    assert evaluated["image"].shape == (4, 16, 16, 3) and evaluated["valid"].all()
