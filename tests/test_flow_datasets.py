"""Flow dataset builders: Sintel and FlyingChairs from the real samples, KITTI from a
fixture written in the devkit's PNG format, and every kind of bad input."""

import pathlib
import shutil

import cv2
import numpy as np
import pytest

from vsegjax.data import features, flow_io
from vsegjax.data import flow_datasets as fd
from vsegjax.data import flow_files as ff
from vsegjax.ops import warp


def _load(builder, split="train"):
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


def _photometric(example, pair):
    """Mean |frame t - frame t+1 warped by the flow| and without motion, over pixels that
    are valid, not occluded and whose flow target lies inside the image."""
    f0 = example["frames"][pair].astype(np.float32)
    f1 = example["frames"][pair + 1].astype(np.float32)
    flow = example["flow_fwd"][pair]
    mask = ((example["flow_valid"][pair] > 0) & (example["occ_fwd"][pair] == 0)
            & (ff.out_of_image(flow) == 0))
    warped = np.asarray(warp(f1, flow))
    return (float(np.abs(warped - f0).mean(-1)[mask].mean()),
            float(np.abs(f1 - f0).mean(-1)[mask].mean()), float(mask.mean()))


def _check_flow_snippet(ex, t, h, w):
    features.validate_snippet(ex)
    assert ex["frames"].shape == (t, h, w, 3) and ex["frames"].dtype == np.uint8
    assert ex["flow_fwd"].shape == (t - 1, h, w, 2) and ex["flow_fwd"].dtype == np.float32
    for key in ("occ_fwd", "flow_valid"):
        assert ex[key].shape == (t - 1, h, w) and ex[key].dtype == np.uint8
        assert set(np.unique(ex[key])) <= {0, 1}
    assert ex["has_flow"].shape == (t - 1,) and ex["has_flow"].dtype == np.bool_
    assert "flow_bwd" not in ex and "occ_bwd" not in ex  # no backward ground truth


# ------------------------------------------------------------------------ real samples


def test_sintel_real_samples(shared_data, tmp_path):
    raw = shared_data / "sintel"
    clean = fd.build("sintel", str(tmp_path), raw, "clean", num_workers=2)
    assert clean.info.metadata["keys"]["train"] == ["alley_1/frame_0002", "alley_2/frame_0002"]
    final4 = fd.build("sintel", str(tmp_path), raw, "final_t4", num_workers=1)
    assert final4.info.metadata["keys"]["train"] == ["bandage_1/frame_0034",
                                                     "cave_2/frame_0001"]
    for builder, t in ((clean, 2), (final4, 4)):
        examples = _load(builder)
        assert len(examples) == 2
        for ex in examples:
            _check_flow_snippet(ex, t, 436, 1024)
            assert not ex["has_label"].any() and (ex["labels"] == 255).all()
            assert int(ex["label_index"]) == 0
    # Only the middle pair of the 4-frame extracts has ground truth.
    ex = _load(final4)[0]
    assert ex["has_flow"].tolist() == [False, True, False]
    assert int(ex["snippet_id"]) == 34  # sequence 0, first frame 34
    assert not ex["flow_valid"][0].any() and not ex["flow_fwd"][0].any()
    # The stored flow is the .flo file; the masks are the PNGs.
    gt = raw / "bandage_1_final" / "gt"
    np.testing.assert_array_equal(ex["flow_fwd"][1], flow_io.read_flo(gt / "frame_0035.flo"))
    np.testing.assert_array_equal(ex["occ_fwd"][1],
                                  flow_io.read_mask(gt / "occlusions/frame_0035.png") // 255)
    np.testing.assert_array_equal(ex["flow_valid"][1],
                                  1 - flow_io.read_mask(gt / "invalid/frame_0035.png") // 255)
    for name, examples in (("clean", _load(clean)), ("final_t4", _load(final4))):
        for ex in examples:
            pair = int(np.argmax(ex["has_flow"]))
            warped, still, frac = _photometric(ex, pair)
            print(f"sintel {name} snippet {int(ex['snippet_id'])}: photometric error "
                  f"warped {warped:.2f} vs no motion {still:.2f} ({frac:.0%} of pixels)")
            assert warped < 0.6 * still, (warped, still)


def test_flying_chairs_real_samples(shared_data, tmp_path):
    builder = fd.build("flying_chairs", str(tmp_path), shared_data / "flyingchairs",
                       num_workers=2)
    assert list(builder.info.splits) == ["train"]  # no split file in the samples
    examples = _load(builder)
    assert [int(ex["snippet_id"]) for ex in examples] == [0, 1, 2]
    for ex in examples:
        _check_flow_snippet(ex, 2, 384, 512)
        assert ex["flow_valid"].all() and ex["has_flow"].all()
        np.testing.assert_array_equal(ex["occ_fwd"][0], ff.out_of_image(ex["flow_fwd"][0]))
        warped, still, frac = _photometric(ex, 0)
        print(f"flying_chairs pair {int(ex['snippet_id'])}: photometric error warped "
              f"{warped:.2f} vs no motion {still:.2f} ({frac:.0%} of pixels)")
        assert warped < 0.6 * still, (warped, still)


# ------------------------------------------------------------------------ KITTI fixture


def _devkit_png(flow, valid):
    """uint16 BGR array built by hand from the devkit's rule: R = u * 64 + 2^15,
    G = v * 64 + 2^15, B = valid; invalid pixels 0."""
    out = np.zeros(flow.shape[:2] + (3,), np.uint16)
    out[..., 2] = np.where(valid, flow[..., 0] * 64 + 32768, 0)  # R = u
    out[..., 1] = np.where(valid, flow[..., 1] * 64 + 32768, 0)  # G = v
    out[..., 0] = valid  # B = valid
    return out


def write_kitti(root, sizes=((20, 30), (22, 28)), semantic=True, seed=0):
    """A KITTI 2015 training folder with known flow; returns {stem: truth}."""
    rng = np.random.default_rng(seed)
    train = pathlib.Path(root) / "training"
    for sub in ("image_2", "flow_occ", "flow_noc", "semantic"):
        (train / sub).mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (h, w) in enumerate(sizes):
        stem = f"{i:06d}"
        # Exact in the format: multiples of 1/64 over the full 16-bit range.
        flow = rng.integers(-32768, 32768, (h, w, 2)).astype(np.float32) / 64
        valid = rng.random((h, w)) < 0.8
        noc = valid & (rng.random((h, w)) < 0.7)
        for name, mask in (("flow_occ", valid), ("flow_noc", noc)):
            assert cv2.imwrite(str(train / name / f"{stem}_10.png"), _devkit_png(flow, mask))
        for frame in ("10", "11"):
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            assert cv2.imwrite(str(train / "image_2" / f"{stem}_{frame}.png"), image)
        ids = rng.choice(np.array([0, 6, 7, 8, 24, 26, 33], np.uint8), (h, w))
        if semantic:
            assert cv2.imwrite(str(train / "semantic" / f"{stem}_10.png"), ids)
        truth[stem] = dict(flow=np.where(valid[..., None], flow, 0), valid=valid, noc=noc,
                           ids=ids)
    return truth


def test_kitti_flow_png_decoding_is_exact(tmp_path):
    truth = write_kitti(tmp_path)
    for stem, t in truth.items():
        path = tmp_path / "training/flow_occ" / f"{stem}_10.png"
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16
        np.testing.assert_array_equal(raw[..., 0], t["valid"])  # B (valid) is cv2's channel 0
        flow, valid = ff.read_kitti_flow(path)
        np.testing.assert_array_equal(flow, t["flow"])
        np.testing.assert_array_equal(valid, t["valid"])
        # Our encoder writes what the devkit writes.
        np.testing.assert_array_equal(ff.encode_kitti_flow(t["flow"], t["valid"]), raw)
    out = tmp_path / "roundtrip.png"
    flow = np.array([[[-512.0, 511.984375], [0.5, -0.015625]]], np.float32)
    ff.write_kitti_flow(out, flow)
    np.testing.assert_array_equal(ff.read_kitti_flow(out)[0], flow)


def test_kitti_builds_flow_and_semantics(tmp_path):
    truth = write_kitti(tmp_path / "raw")
    builder = fd.build("kitti_2015", str(tmp_path / "tfds"), tmp_path / "raw", "flow",
                       num_workers=2)
    examples = _load(builder)
    assert [int(ex["snippet_id"]) for ex in examples] == [0, 1]
    for ex, (stem, t) in zip(examples, truth.items()):
        h, w = t["valid"].shape
        _check_flow_snippet(ex, 2, h, w)  # sizes differ per record
        np.testing.assert_array_equal(ex["flow_fwd"][0], t["flow"])
        np.testing.assert_array_equal(ex["flow_valid"][0], t["valid"])
        np.testing.assert_array_equal(ex["occ_fwd"][0], t["valid"] & ~t["noc"])
        assert ex["has_label"].tolist() == [True, False] and int(ex["label_index"]) == 0
        assert (ex["labels"][1] == 255).all()
    sem = _load(fd.build("kitti_2015", str(tmp_path / "tfds"), tmp_path / "raw", "semantics"))
    assert len(sem) == 2
    for ex, t in zip(sem, truth.values()):
        features.validate_snippet(ex, num_classes=19)
        assert ex["frames"].shape[0] == 1 and "flow_fwd" not in ex
        assert ex["has_label"].tolist() == [True]
        expected = np.full(t["ids"].shape, 255, np.uint8)
        for cityscapes, train_id in ((7, 0), (8, 1), (24, 11), (26, 13), (33, 18)):
            expected[t["ids"] == cityscapes] = train_id
        np.testing.assert_array_equal(ex["labels"][0], expected)
        assert (ex["labels"][0][np.isin(t["ids"], [0, 6])] == 255).all()


def test_kitti_data_scene_flow_layout_without_semantics(tmp_path):
    write_kitti(tmp_path / "raw" / "data_scene_flow", semantic=False)
    examples = _load(fd.build("kitti_2015", str(tmp_path / "tfds"), tmp_path / "raw", "flow"))
    assert len(examples) == 2 and not any(ex["has_label"].any() for ex in examples)
    with pytest.raises(FileNotFoundError, match="training/semantic"):
        fd.build("kitti_2015", str(tmp_path / "tfds"), tmp_path / "raw", "semantics")


# ------------------------------------------------------------------------ Sintel layouts


def write_sintel(root, sequences=(("seq_a", 5), ("seq_b", 3)), size=(8, 12), seed=0):
    """The official MPI-Sintel training layout (clean pass only), tiny frames."""
    rng = np.random.default_rng(seed)
    train = pathlib.Path(root) / "training"
    for seq, count in sequences:
        for sub in ("clean", "flow", "occlusions", "invalid"):
            (train / sub / seq).mkdir(parents=True, exist_ok=True)
        for n in range(1, count + 1):
            name = f"frame_{n:04d}"
            cv2.imwrite(str(train / "clean" / seq / f"{name}.png"),
                        rng.integers(0, 256, size + (3,), dtype=np.uint8))
            if n < count:
                flow_io.write_flo(train / "flow" / seq / f"{name}.flo",
                                  rng.normal(size=size + (2,)).astype(np.float32))
                for sub in ("occlusions", "invalid"):
                    cv2.imwrite(str(train / sub / seq / f"{name}.png"),
                                (rng.random(size) < 0.2).astype(np.uint8) * 255)
    return train


def test_sintel_official_layout_windows(tmp_path):
    train = write_sintel(tmp_path / "raw")
    cfg = fd.sintel_config("clean", num_frames=3)
    assert cfg.name == "clean_t3"
    builder = fd.build("sintel", str(tmp_path / "tfds"), tmp_path / "raw", cfg)
    assert builder.info.metadata["keys"]["train"] == [
        "seq_a/frame_0001", "seq_a/frame_0003", "seq_b/frame_0001"]
    examples = _load(builder)
    assert [int(ex["snippet_id"]) for ex in examples] == [1, 3, 10001]
    for ex in examples:
        _check_flow_snippet(ex, 3, 8, 12)
        assert ex["has_flow"].all()
    np.testing.assert_array_equal(examples[1]["flow_fwd"][1],
                                  flow_io.read_flo(train / "flow/seq_a/frame_0004.flo"))
    with pytest.raises(FileNotFoundError, match="final"):
        fd.build("sintel", str(tmp_path / "tfds"), tmp_path / "raw", "final")


def test_sintel_missing_frame_and_flow(tmp_path):
    train = write_sintel(tmp_path / "raw")
    (train / "clean/seq_a/frame_0004.png").unlink()
    with pytest.raises(FileNotFoundError, match="frame_0004.png"):
        fd.build("sintel", str(tmp_path / "a"), tmp_path / "raw", "clean")
    builder = fd.build("sintel", str(tmp_path / "b"), tmp_path / "raw", "clean",
                       skip_bad=True)
    # Pairs 1-2, 2-3 of seq_a (no pair crosses the gap) and 1-2, 2-3 of seq_b.
    assert len(builder.as_data_source("train")) == 4
    assert "frame_0004.png" in str(builder.skipped)
    assert "frame_0004.png" in str(builder.info.metadata["skipped"])
    write_sintel(tmp_path / "raw")  # restores frame 4
    (train / "flow/seq_b/frame_0002.flo").unlink()
    with pytest.raises(FileNotFoundError, match=r"seq_b/frame_0002\.flo"):
        fd.build("sintel", str(tmp_path / "c"), tmp_path / "raw", fd.sintel_config("clean", 3, 1))


# ------------------------------------------------------------------------ FlyingChairs


def write_chairs(root, count=5, size=(6, 8), seed=0):
    """Official FlyingChairs names plus the train/validation list."""
    rng = np.random.default_rng(seed)
    data = pathlib.Path(root) / "FlyingChairs_release" / "data"
    data.mkdir(parents=True)
    for n in range(1, count + 1):
        for k in (1, 2):
            cv2.imwrite(str(data / f"{n:05d}_img{k}.ppm"),
                        rng.integers(0, 256, size + (3,), dtype=np.uint8))
        flow_io.write_flo(data / f"{n:05d}_flow.flo", rng.normal(size=size + (2,)) * 4)
    marks = ["1", "2", "1", "1", "2"][:count]
    (data.parent / ff.CHAIRS_SPLIT_FILE).write_text("\n".join(marks) + "\n")
    return data


def test_flying_chairs_official_names_and_splits(tmp_path):
    write_chairs(tmp_path / "raw")
    builder = fd.build("flying_chairs", str(tmp_path / "tfds"), tmp_path / "raw")
    assert builder.info.metadata["keys"] == {"train": ["00001", "00003", "00004"],
                                             "validation": ["00002", "00005"]}
    ex = builder.as_data_source("validation")[1]
    _check_flow_snippet(ex, 2, 6, 8)
    assert int(ex["snippet_id"]) == 5


# ------------------------------------------------------------------------ bad input


@pytest.fixture
def chairs_copy(shared_data, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(shared_data / "flyingchairs", raw)
    return raw


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("name", ["0000001-img1.ppm", "0000001-gt.flo"])
def test_truncated_file_is_named(chairs_copy, tmp_path, name):
    _truncate(chairs_copy / name)
    with pytest.raises(ff.BadExample, match=name):
        fd.build("flying_chairs", str(tmp_path / "tfds"), chairs_copy, num_workers=1)


def test_missing_ground_truth_is_named(chairs_copy, tmp_path):
    (chairs_copy / "0000002-gt.flo").unlink()
    with pytest.raises(FileNotFoundError, match="0000002-gt.flo"):
        fd.build("flying_chairs", str(tmp_path / "tfds"), chairs_copy)
    write_kitti(tmp_path / "kitti")
    (tmp_path / "kitti/training/flow_noc/000001_10.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"flow_noc/000001_10\.png"):
        fd.build("kitti_2015", str(tmp_path / "tfds"), tmp_path / "kitti")


def test_frames_of_different_sizes_are_named(tmp_path):
    write_kitti(tmp_path / "kitti")
    cv2.imwrite(str(tmp_path / "kitti/training/image_2/000000_11.png"),
                np.zeros((21, 30, 3), np.uint8))
    with pytest.raises(ff.BadExample, match=r"000000_10\.png is 30x20.*000000_11\.png is 30x21"):
        fd.build("kitti_2015", str(tmp_path / "tfds"), tmp_path / "kitti")


def test_bad_kitti_flow_png_is_named(tmp_path):
    write_kitti(tmp_path / "kitti")
    path = tmp_path / "kitti/training/flow_occ/000000_10.png"
    cv2.imwrite(str(path), np.zeros((20, 30, 3), np.uint8))  # 8-bit: not a flow PNG
    with pytest.raises(ff.BadExample, match=r"flow_occ/000000_10\.png.*16-bit"):
        fd.build("kitti_2015", str(tmp_path / "tfds"), tmp_path / "kitti")


@pytest.mark.parametrize("name", ["sintel", "flying_chairs", "kitti_2015"])
def test_missing_or_empty_manual_dir(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist; expected"):
        fd.build(name, str(tmp_path / "tfds"), tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty is empty; expected"):
        fd.build(name, str(tmp_path / "tfds"), tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("not a dataset")
    with pytest.raises(FileNotFoundError, match=r"other.*expected"):
        fd.build(name, str(tmp_path / "tfds"), tmp_path / "other")


def test_skip_bad_skips_and_reports(chairs_copy, tmp_path, capsys):
    _truncate(chairs_copy / "0000000-img0.ppm")
    (chairs_copy / "0000002-gt.flo").unlink()
    builder = fd.build("flying_chairs", str(tmp_path / "tfds"), chairs_copy, skip_bad=True)
    assert len(builder.as_data_source("train")) == 1
    assert builder.info.metadata["keys"]["train"] == ["0000001"]
    skipped = builder.skipped["train"]
    assert [s["what"] for s in skipped] == ["0000000", "0000002"]
    assert "0000000-img0.ppm" in skipped[0]["why"] and "0000002-gt.flo" in skipped[1]["why"]
    out = capsys.readouterr().out
    assert "skipped 2 bad example(s)" in out and "0000002-gt.flo" in out
    # The report is kept with the dataset.
    reread = fd.make_builder("flying_chairs", str(tmp_path / "tfds"))
    assert len(reread.info.metadata["skipped"]["train"]) == 2


def test_interrupted_build_does_not_look_complete(chairs_copy, tmp_path, monkeypatch):
    real = ff.load_snippet
    calls = []

    def failing(spec, num_classes=None):
        calls.append(spec.key)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(spec, num_classes)

    monkeypatch.setattr(ff, "load_snippet", failing)
    with pytest.raises(KeyboardInterrupt):
        fd.build("flying_chairs", str(tmp_path / "tfds"), chairs_copy, num_workers=1)
    builder = fd.make_builder("flying_chairs", str(tmp_path / "tfds"))
    assert not builder.is_prepared()
    monkeypatch.setattr(ff, "load_snippet", real)
    builder = fd.build("flying_chairs", str(tmp_path / "tfds"), chairs_copy, num_workers=1)
    assert len(builder.as_data_source("train")) == 3


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="pass_name"):
        fd.sintel_config("albedo")
    with pytest.raises(ValueError, match="num_frames"):
        fd.sintel_config("clean", 1)
    assert fd.sintel_config("final", 4) is fd.sintel_config("final", 4, stride=3)
    assert fd.sintel_config("final", 4).name == "final_t4"
    assert fd.sintel_config("final", 4, stride=1).name == "final_t4s1"
    with pytest.raises(ValueError, match="unknown flow dataset"):
        fd.make_builder("kitti", "/tmp")
