"""VPLR: propagated pairs as a dataset mixed into segmentation training; the configs."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from vsegjax.data import datasets, synthetic_tfds
from vsegjax import experiments
from vsegjax.methods.vplr import task as vplr
ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name, variant=None):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if variant is None else module.get_config(variant)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    synthetic_tfds.build(str(data_dir), "tiny", num_workers=1)
    return str(data_dir)


def tiny(data_dir, variant):
    c = load_config("vplr_synthetic", variant)
    c.data.data_dir, c.data.config = data_dir, "tiny"  # 48x64, 5 frames, labelled frame 3
    c.input.augment.resize = c.input.augment.crop_size = (48, 64)
    c.input.batch_size = 8
    c.vplr.propagated_batch_size = 8
    c.model.width = 8
    c.train.num_steps = 2
    c.eval.num_snippets = 8
    return c


def test_variants_are_the_paper_rows():
    rows = {v: load_config("vplr_synthetic", v) for v in "abcde"}
    assert [rows[v].vplr.mode for v in "abcde"] == ["none", "label", "joint", "joint", "joint"]
    assert [rows[v].loss.relaxation_window for v in "abcde"] == [0, 0, 0, 3, 3]
    assert rows["e"].loss.relaxation_on == "propagated"
    # Same examples per step in every row.
    assert {r.input.batch_size + (r.vplr.propagated_batch_size if r.vplr.mode != "none" else 0)
            for r in rows.values()} == {8}
    with pytest.raises(ValueError, match="unknown variant"):
        load_config("vplr_synthetic", "f")
    # "_nogeom": the same row without random scale and flip, nothing else changed.
    plain, nogeom = load_config("vplr_synthetic", "d"), load_config("vplr_synthetic", "d_nogeom")
    assert tuple(nogeom.input.augment.scale_range) == (1.0, 1.0)
    assert nogeom.input.augment.hflip is False and plain.input.augment.hflip is True
    nogeom.input.augment.update(dict(plain.input.augment))
    assert nogeom.to_dict() == plain.to_dict()
    with pytest.raises(ValueError, match="unknown variant"):
        load_config("vplr_synthetic", "f_nogeom")


def test_label_and_joint_pairs_from_the_labelled_frame(tiny_data, tmp_path):
    c = tiny(tiny_data, "b")
    c.vplr.motion = "copy"
    label = vplr.propagated_pairs(c, str(tmp_path))
    source = datasets.open_split(c.data, "train")
    n = len(source)
    # Labelled frame 3 of 5 frames, k <= 3: frames 0, 1, 2 and 4 -> 4 pairs per snippet.
    assert len(label["frames"]) == 4 * n and sorted(set(label["k"].tolist())) == [1, 2, 3]
    ex = source[0]
    # With zero motion, label propagation pairs the true frames with the copied label...
    np.testing.assert_array_equal(label["frames"][0], ex["frames"][0])
    np.testing.assert_array_equal(label["labels"][0], ex["labels"][3])
    c.vplr.mode = "joint"
    joint = vplr.propagated_pairs(c, str(tmp_path))
    # ... joint propagation pairs the labelled frame's own image with it.
    np.testing.assert_array_equal(joint["frames"][0], ex["frames"][3])
    np.testing.assert_array_equal(joint["labels"][0], ex["labels"][3])
    assert len(list(tmp_path.glob("propagated_*.npz"))) == 2  # cached per setting
    again = vplr.propagated_pairs(c, str(tmp_path))
    np.testing.assert_array_equal(again["labels"], joint["labels"])


def test_native_propagation_moves_labels_at_the_stored_size(tmp_path, monkeypatch):
    # A bar moving 1 px per frame at the stored 16x64, trained at 8x32 (0.5 px per frame).
    t_len, anchor = 7, 3
    frames = np.zeros((t_len, 16, 64, 3), np.uint8)
    labels = np.zeros((t_len, 16, 64), np.uint8)
    for t in range(t_len):
        labels[t, :, 10 + t:14 + t] = 1
        frames[t, :, 10 + t:14 + t] = 200
    example = {"frames": frames, "labels": labels, "label_index": anchor}
    monkeypatch.setattr(vplr.datasets, "open_split", lambda data, split: [example])

    def exact_flow(video, source):  # the true motion at whatever size it is asked for
        step = np.zeros((len(video) - 1,) + video.shape[1:3] + (2,), np.float32)
        step[..., 0] = video.shape[2] / 64
        return step, -step

    monkeypatch.setattr(vplr.prop, "video_flows", exact_flow)
    c = load_config("vplr_synthetic", "b")
    c.input.augment.resize = (8, 32)
    c.vplr.propagate_at = "native"
    native = vplr.propagated_pairs(c, str(tmp_path))
    targets = [0, 1, 2, 4, 5, 6]
    assert native["labels"].shape == (6, 8, 32) and native["frames"].shape == (6, 8, 32, 3)
    truth = vplr._resize_frames(frames[targets], labels[targets], (8, 32))[1]
    np.testing.assert_array_equal(native["labels"], truth)  # exact at every k
    c.vplr.propagate_at = "train"
    small = vplr.propagated_pairs(c, str(tmp_path))
    assert (small["labels"] != truth).any()  # half-pixel motion rounds at the small size
    c.vplr.propagate_at = "full"
    with pytest.raises(ValueError, match="vplr.propagate_at"):
        vplr.propagated_pairs(c, str(tmp_path))


@pytest.mark.slow
def test_training_mixes_both_streams_and_writes_metrics(tiny_data, tmp_path):
    c = tiny(tiny_data, "d")
    task = vplr.VPLRTask(c, str(tmp_path))
    batch = next(task.train_iterator(0))
    assert batch["frames"].shape[:2] == (16, 1)
    assert set(batch) == {"frames", "labels", "propagated"}
    assert batch["propagated"].tolist() == [False] * 8 + [True] * 8
    out = experiments.run(c, str(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "eval_metrics.json").read_text())
    assert saved == out and saved["relaxation_window"] == 3 and 0.0 <= saved["miou"] <= 1.0


def test_cityscapes_configs_hold_the_papers_setup():
    for v in "abcd":
        c = load_config("vplr_cityscapes", v)
        assert c.model.head == "deeplabv3plus" and c.input.augment.crop_size == (800, 800)
        assert c.input.class_uniform and c.optimizer.name == "sgd"
        assert c.vplr.motion == "sdc" and c.loss.relaxation_window == (3 if v == "d" else 0)
    w = load_config("warp_refine_cityscapes")
    static, refiner = experiments.resolve_stages(w, "/tmp/unused")
    assert refiner.task_name == "warp_refine" and refiner.config.optimizer.frozen == ("static",)
    assert static.config.optimizer.frozen == () and refiner.config.warp_refine.k == 5
    assert static.config.train.num_steps == 90_000 and refiner.config.train.num_steps == 40_000
    assert static.config.optimizer.name == refiner.config.optimizer.name == "sgd"
    s = load_config("warp_refine_synthetic")
    assert s.warp_refine.labels == "annotated" and s.warp_refine.loss_weights.L_cycle == 1.0


def test_relaxation_on_propagated_rows_only(tiny_data, tmp_path):
    """With relaxation_on='propagated' the loss is plain NLL when no row is propagated
    and the relaxed NLL when every row is."""
    import jax
    import jax.numpy as jnp

    from vsegjax import losses
    from vsegjax.models.segmenter import apply_static

    c = tiny(tiny_data, "e")
    task = vplr.VPLRTask(c, str(tmp_path))
    v = task.init_variables(jax.random.key(0))
    params = v.pop("params")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(0, 10, (2, 1, 6, 8)), 8, 2), 8, 3)
    batch = {"frames": jnp.asarray(rng.uniform(size=(2, 1, 48, 64, 3)), jnp.float32),
             "labels": jnp.asarray(labels.astype(np.uint8))}
    logits, _ = apply_static(task.model, params, v, batch["frames"][:, 0], True,
                             jax.random.key(1))
    for flag, window in ((False, 0), (True, 3)):
        b = dict(batch, propagated=jnp.full(2, flag))
        loss, _ = task.loss_fn(params, v, b, jax.random.key(1))
        want = losses.segmentation_loss(logits, batch["labels"][:, 0], window)
        np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_open_split_keeps_the_first_n_records(tiny_data):
    c = tiny(tiny_data, "a")
    full, head = datasets.open_split(c.data, "train"), datasets.open_split(c.data, "train[:5]")
    assert len(head) == 5 < len(full)
    np.testing.assert_array_equal(head[4]["frames"], full[4]["frames"])
    with pytest.raises(IndexError, match="outside"):
        head[5]
