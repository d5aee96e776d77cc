"""grain pipeline: determinism, checkpointable iterator state, sharding, global batches."""

import itertools
import json

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from _tiny_builder import TINY_SPLITS, make_snippet
from vsegjax.data import augment as aug
from vsegjax.data import pipeline
from vsegjax.core import sharding
NUM = 16


@pytest.fixture(scope="module")
def source():
    return [make_snippet(i, labelled=(1, 3), label_index=3) for i in range(NUM)]


def _ds(source, **kw):
    args = dict(batch_size=8, seed=0, window=(1, 1), read_threads=2,
                augment=aug.Augment(crop_size=(16, 16)))
    args.update(kw)
    return pipeline.make_dataset(source, **args)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batch_shapes_and_dtypes(source):
    batch = next(iter(_ds(source)))
    assert batch["frames"].shape == (8, 3, 16, 16, 3) and batch["frames"].dtype == np.float32
    assert batch["labels"].shape == (8, 3, 16, 16) and batch["labels"].dtype == np.int32
    assert batch["flow_fwd"].shape == (8, 2, 16, 16, 2)
    assert batch["occ_bwd"].shape == (8, 2, 16, 16)
    np.testing.assert_array_equal(batch["label_pos"], 1)
    assert batch["has_label"][:, 1].all()
    assert len(set(batch["snippet_id"].tolist())) == 8
    assert 0 <= batch["frames"].min() and batch["frames"].max() <= 1


def test_same_seed_same_batches_different_seed_different_order(source):
    a = _take(iter(_ds(source, seed=3)), 3)
    b = _take(iter(_ds(source, seed=3, read_threads=1)), 3)  # threads do not matter
    _assert_batches_equal(a, b)
    c = _take(iter(_ds(source, seed=4)), 3)
    ids = lambda bs: np.concatenate([x["snippet_id"] for x in bs]).tolist()
    assert ids(a) != ids(c)


def test_epochs_cover_the_data_and_reshuffle(source):
    ds = _ds(source, num_epochs=2, augment=None, window=None)
    batches = list(ds)
    assert len(batches) == 4
    ids = np.concatenate([b["snippet_id"] for b in batches])
    assert sorted(ids[:NUM]) == list(range(NUM)) and sorted(ids[NUM:]) == list(range(NUM))
    assert ids[:NUM].tolist() != ids[NUM:].tolist()
    assert ids[:NUM].tolist() != list(range(NUM))
    # without augmentation the stored example comes back (as model dtypes)
    first = batches[0]
    k = int(first["snippet_id"][0])
    np.testing.assert_allclose(first["frames"][0], source[k]["frames"] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(first["label_pos"][0], 3)


def test_no_shuffle_is_in_order(source):
    batch = next(iter(_ds(source, shuffle=False, augment=None)))
    np.testing.assert_array_equal(batch["snippet_id"], np.arange(8))


def test_iterator_state_resume_matches_uninterrupted_run(source):
    ds = _ds(source, label_frame="random")
    it = iter(ds)
    _take(it, 3)
    state = it.get_state()
    restored = json.loads(json.dumps(state))  # small and JSON-serialisable
    assert restored == state and len(json.dumps(state)) < 200
    expected = _take(it, 2)
    it2 = iter(_ds(source, label_frame="random"))  # a fresh pipeline, as after a restart
    it2.set_state(restored)
    _assert_batches_equal(_take(it2, 2), expected)


@pytest.mark.slow
def test_iterator_state_resume_with_worker_processes(source):
    ds = _ds(source, worker_count=2)
    it = iter(ds)
    _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 2)
    it.close()
    it2 = iter(_ds(source, worker_count=2))
    it2.set_state(state)
    got = _take(it2, 2)
    it2.close()
    _assert_batches_equal(got, expected)
    # and workers give the same data as the in-process pipeline
    _assert_batches_equal(_take(iter(_ds(source)), 4)[2:], expected)


def test_process_chunks_interleave_and_cut_to_whole_global_batches():
    assert range(10)[pipeline.process_chunks(10, 1, 3)] == range(1, 9, 3)  # 9 of 10 used
    assert range(100)[pipeline.process_chunks(None, 0, 4)][:3] == range(0, 12, 4)
    with pytest.raises(ValueError, match="process_index"):
        pipeline.process_chunks(10, 3, 3)
    with pytest.raises(ValueError, match="cannot be shared by 3"):
        pipeline.process_chunks(2, 0, 3)


@pytest.mark.parametrize("num_epochs", [1, None])
def test_processes_rows_make_the_one_process_global_batch(source, num_epochs):
    """2 or 4 processes' rows, stacked in process order, are the 1-process batch:
    the data of a run do not depend on how many hosts read them."""
    def batches(count, index):
        ds = _ds(source, batch_size=8, process_index=index, process_count=count,
                 num_epochs=num_epochs)
        return _take(iter(ds), 2)

    whole = batches(1, 0)
    for count in (2, 4):
        parts = [batches(count, i) for i in range(count)]
        for k in range(2):
            assert parts[0][k]["frames"].shape[0] == 8 // count
            stacked = {key: np.concatenate([p[k][key] for p in parts]) for key in whole[k]}
            _assert_batches_equal([stacked], [whole[k]])


def test_batch_size_checks(source):
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        _ds(source, batch_size=12)
    with pytest.raises(ValueError, match="number of processes"):
        _ds(source, batch_size=8, process_count=3, process_index=0)
    mesh = sharding.make_mesh(2)
    ds = _ds(source, batch_size=2, mesh=mesh)  # only the data axis' 2 devices matter
    assert next(iter(ds))["frames"].shape[0] == 2
    with pytest.raises(ValueError, match="mesh axes .data. x .fsdp."):
        _ds(source, batch_size=3, mesh=mesh)


def test_to_global_batch_on_eight_devices(source):
    assert jax.device_count() == 8
    mesh = sharding.make_mesh()
    host = next(iter(_ds(source)))
    glob = sharding.to_global_batch(host, mesh)
    assert set(glob) == set(host)
    for key, x in glob.items():
        assert isinstance(x, jax.Array)
        assert x.shape == host[key].shape
        assert x.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), x.ndim)
        assert len(x.addressable_shards) == 8
        assert x.addressable_shards[0].data.shape[0] == 1
        np.testing.assert_array_equal(np.asarray(x), host[key])
    assert glob["snippet_id"].dtype == np.int32  # 64-bit ids narrowed without x64
    with pytest.raises(ValueError, match="not divisible"):
        sharding.to_global_batch({k: v[:4] for k, v in host.items()}, mesh)
    with pytest.raises(ValueError, match="no axis"):
        sharding.to_global_batch(host, mesh, data_axis="batch")


def test_batch_iterator_is_lazy_and_matches_state(source):
    mesh = sharding.make_mesh()
    it = iter(_ds(source))
    batches = list(itertools.islice(sharding.batch_iterator(it, mesh), 2))
    assert all(isinstance(b["frames"], jax.Array) for b in batches)
    state = it.get_state()
    it2 = iter(_ds(source))
    _take(it2, 2)
    assert it2.get_state() == state


# ------------------------------------------------------------------ tfds path


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    tiny_builder = pytest.importorskip("_tiny_builder")
    if not hasattr(tiny_builder, "TinyVideoSnippets"):
        pytest.skip("tensorflow_datasets is not installed")
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tiny_builder.TinyVideoSnippets(data_dir=str(data_dir),
                                             file_format="array_record")
    builder.download_and_prepare()
    return data_dir


def test_tfds_array_record_source_through_pipeline(tiny_tfds):
    src = pipeline.load_split("tiny_video_snippets", "train", data_dir=tiny_tfds)
    assert len(src) == TINY_SPLITS["train"]
    record = src[0]
    assert record["frames"].shape == (4, 8, 12, 3) and record["frames"].dtype == np.uint8
    ds = pipeline.make_dataset(src, batch_size=8, seed=1, window=(1, 1), read_threads=2,
                               augment=aug.Augment(scale_range=None, color=None))
    it = iter(ds)
    batch = next(it)
    assert batch["frames"].shape == (8, 3, 8, 12, 3)
    assert set(batch["snippet_id"].tolist()) <= set(range(TINY_SPLITS["train"]))
    state = it.get_state()
    expected = next(it)
    it2 = iter(ds)
    it2.set_state(state)
    _assert_batches_equal([next(it2)], [expected])
    glob = sharding.to_global_batch(batch, sharding.make_mesh())
    assert glob["frames"].shape == (8, 3, 8, 12, 3)
    test = pipeline.load_split("tiny_video_snippets", "test", data_dir=tiny_tfds)
    assert sorted(int(test[i]["snippet_id"]) for i in range(len(test))) == [1000, 1001, 1002]


def test_load_split_missing_dataset_explains_how_to_build(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as info:
        pipeline.load_split("synthetic_video", "train", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "python data_prep/synthetic_video.py" in msg
    with pytest.raises(FileNotFoundError, match=r"'cityscapes_video'.*data_prep"):
        pipeline.load_split("cityscapes_video", "train", data_dir=tmp_path / "none")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
    with pytest.raises(FileNotFoundError, match="default"):
        pipeline.load_split("synthetic_video", "train")


def test_load_split_missing_version(tiny_tfds):
    with pytest.raises(FileNotFoundError, match="tiny_video_snippets:9.0.0"):
        pipeline.load_split("tiny_video_snippets:9.0.0", "train", data_dir=tiny_tfds)


def test_batch_fn_applies_to_every_batch_and_keeps_resume(source):
    def add_mean(batch):
        return dict(batch, mean=batch["frames"].mean(axis=(1, 2, 3, 4)))

    it = iter(_ds(source, batch_fn=add_mean))
    first = _take(it, 2)
    for batch in first:
        np.testing.assert_allclose(batch["mean"], batch["frames"].mean(axis=(1, 2, 3, 4)))
    state = it.get_state()
    expected = _take(it, 1)
    it2 = iter(_ds(source, batch_fn=add_mean))
    it2.set_state(state)
    _assert_batches_equal(expected, _take(it2, 1))


def test_label_ids_outside_the_classes_are_named(source):
    bad = [dict(ex) for ex in source]
    bad[5] = dict(bad[5], labels=np.where(bad[5]["labels"] == 1, 7, bad[5]["labels"]))
    it = iter(_ds(bad, shuffle=False, num_classes=5))
    with pytest.raises(ValueError, match=r"snippet 5 field 'labels'.*\[7\]"):
        _take(it, 2)


def test_class_uniform_sampling_sees_a_rare_class_often():
    """Class 4 covers one corner of one snippet in 16: uniform sampling over classes shows
    it in about a fifth of the crops, plain shuffling almost never."""
    rare = []
    for i in range(16):
        ex = make_snippet(i, labelled=None, label_index=3, num_classes=4)
        if i == 7:
            ex["labels"][:, :3, :3] = 4
        rare.append(ex)

    def share_with_class_4(**kw):
        ds = _ds(rare, batch_size=8, window=(0, 0), num_classes=5,
                 augment=aug.Augment(scale_range=None, crop_size=(8, 8), hflip=False,
                                     color=None), **kw)
        batches = _take(iter(ds), 10)
        labels = np.concatenate([b["labels"][:, 0] for b in batches])
        return np.mean([(l == 4).any() for l in labels])

    uniform = share_with_class_4(class_uniform=True)
    plain = share_with_class_4()
    assert 0.1 < uniform < 0.35 and plain < 0.1, (uniform, plain)


def test_class_uniform_sampling_draws_classes_about_equally_on_a_skewed_set():
    """Class 0 fills every frame; classes 1, 2, 3 occupy a corner of 8, 2 and 1 snippet(s)
    in 32. Class-uniform crops show each class in about a quarter of the crops (its own
    draws, plus whatever else shares a snippet), plain shuffling almost never shows 3."""
    skewed = []
    for i in range(32):
        ex = make_snippet(i, labelled=None, label_index=3, num_classes=1)
        ex["labels"][:] = 0
        for c, members in ((1, range(8)), (2, (8, 9)), (3, (10,))):
            if i in members:
                ex["labels"][:, :4, :4] = c
        skewed.append(ex)

    def shares(**kw):
        ds = _ds(skewed, batch_size=8, window=(0, 0), num_classes=4,
                 augment=aug.Augment(scale_range=None, crop_size=(8, 8), hflip=False,
                                     color=None), **kw)
        labels = np.concatenate([b["labels"][:, 0] for b in _take(iter(ds), 25)])
        return np.asarray([np.mean([(l == c).any() for l in labels]) for c in range(4)])

    uniform, plain = shares(class_uniform=True), shares()
    print("class-uniform", uniform, "plain", plain)
    # 200 crops: each rare class ~0.25 (binomial sd ~0.03); class 0 shows in most crops.
    assert np.all((uniform[1:] > 0.15) & (uniform[1:] < 0.37)), uniform
    assert uniform[1:].max() - uniform[1:].min() < 0.15, uniform
    assert plain[1:].max() < 0.08, plain
