"""The CamVid builder: list parsing, a build from a small copy of the real sample, snippets
around labelled frames from a fake 30 fps folder, and every kind of bad input."""

import pathlib
import shutil

import cv2
import numpy as np
import pytest

from vsegjax.data import camvid, features

TRAIN = ["0001TP_006690", "0001TP_006720", "0006R0_f00930", "0006R0_f00960",
         "0016E5_00390", "0016E5_00420"]
VAL = ["0016E5_07959", "0016E5_07961", "0016E5_07963", "0016E5_07965"]
SPLITS = {"train": ("train", "trainannot", TRAIN), "validation": ("val", "valannot", VAL)}


def _copy_sample(src: pathlib.Path, dst: pathlib.Path, splits=("train", "validation")):
    """A small CamVid manual dir: a few real pairs and SegNet-style lists for them."""
    for split in splits:
        images, annots, names = SPLITS[split]
        (dst / images).mkdir(parents=True)
        (dst / annots).mkdir()
        lines = []
        for name in names:
            shutil.copy(src / images / f"{name}.png", dst / images)
            shutil.copy(src / annots / f"{name}.png", dst / annots)
            lines.append(f"/SegNet/CamVid/{images}/{name}.png /SegNet/CamVid/{annots}/{name}.png")
        (dst / f"{images}.txt").write_text("\n".join(lines))  # no final newline, like SegNet's
    return dst


@pytest.fixture(scope="module")
def sample(shared_data, tmp_path_factory):
    src = shared_data / "camvid"
    if not (src / "train").is_dir():
        pytest.skip(f"CamVid sample not found at {src}")
    return src, _copy_sample(src, tmp_path_factory.mktemp("camvid_raw"))


@pytest.fixture(scope="module")
def built(sample, tmp_path_factory):
    _, raw = sample
    return camvid.build(str(tmp_path_factory.mktemp("tfds")), raw, num_workers=2)


def _read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# --- pure helpers ------------------------------------------------------------------------

def test_parse_split_list_strips_segnet_prefix():
    text = ("/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png\n"
            "\n# a comment\n"
            "train/0006R0_f00930.png\n"
            "/elsewhere/CamVid/train/a.png /elsewhere/CamVid/trainannot/a.png")
    pairs = camvid.parse_split_list(text, "train.txt")
    assert pairs == [("train/0001TP_006690.png", "trainannot/0001TP_006690.png"),
                     ("train/0006R0_f00930.png", None),
                     ("/elsewhere/CamVid/train/a.png", "/elsewhere/CamVid/trainannot/a.png")]
    root = pathlib.Path("/data/camvid")
    assert camvid.resolve_listed_path(root, pairs[0][0]) == root / "train/0001TP_006690.png"
    # An absolute path from another machine is taken as <folder>/<file> under the root.
    assert camvid.resolve_listed_path(root, pairs[2][1]) == root / "trainannot/a.png"
    with pytest.raises(ValueError, match=r"train.txt:2: expected '<image> <label>'"):
        camvid.parse_split_list("a.png b.png\na.png b.png c.png\n", "train.txt")


def test_parse_frame_name():
    assert camvid.parse_frame_name("0016E5_08190") == ("0016E5_", 8190, 5)
    assert camvid.parse_frame_name("0006R0_f00960") == ("0006R0_f", 960, 5)
    assert camvid.frame_stem("0006R0_f", 959, 5) == "0006R0_f00959"
    assert camvid.drive_of("0006R0_f00960") == "0006R0"
    with pytest.raises(ValueError, match="frame number"):
        camvid.parse_frame_name("frame_x")


def test_config_checks():
    with pytest.raises(ValueError, match="sequence_dir"):
        camvid.custom_config(frames_before=2)
    with pytest.raises(ValueError, match="label_format"):
        camvid.custom_config(label_format="rgb")
    with pytest.raises(ValueError, match="resize"):
        camvid.custom_config(resize=(4, 4))
    assert camvid.custom_config() is camvid.DEFAULT
    assert camvid.custom_config(2, 1, "/x").name == "t2-1_360x480"
    assert camvid.custom_config(resize=(180, 240)).name == "t0-0_180x240"


# --- the real sample ---------------------------------------------------------------------

def test_default_build_from_real_sample(sample, built):
    src, _ = sample
    assert built.builder_config.name == "default"
    assert {k: v.num_examples for k, v in built.info.splits.items()} == {
        "train": len(TRAIN), "validation": len(VAL)}
    assert built.info.metadata["names"]["train"] == TRAIN
    saw_unlabelled = False
    for split, (images, annots, names) in SPLITS.items():
        source = built.as_data_source(split)
        for i in range(len(source)):
            ex = source[i]
            features.validate_snippet(ex, num_classes=camvid.NUM_CLASSES)
            assert ex["frames"].shape == (1, 360, 480, 3) and ex["frames"].dtype == np.uint8
            assert ex["labels"].shape == (1, 360, 480) and ex["labels"].dtype == np.uint8
            assert ex["has_label"].tolist() == [True] and int(ex["label_index"]) == 0
            assert int(ex["snippet_id"]) == i
            name = names[i]
            assert int(ex["frame_index"]) == camvid.parse_frame_name(name)[1]
            assert not any(k in ex for k in features.FLOW_KEYS)
            np.testing.assert_array_equal(ex["frames"][0], _read_rgb(src / images / f"{name}.png"))
            raw = cv2.imread(str(src / annots / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            assert set(np.unique(raw).tolist()) <= set(range(12))
            np.testing.assert_array_equal(ex["labels"][0], np.where(raw == 11, 255, raw))
            assert set(np.unique(ex["labels"]).tolist()) <= set(range(11)) | {255}
            saw_unlabelled |= bool((raw == 11).any())
    assert saw_unlabelled, "no raw id 11 in the sample: the ignore mapping went untested"


def _fake_sequence(src, root, mapping, subfolder=None, scale=1):
    """Writes real val frames under new 30 fps names (optionally upscaled)."""
    root.mkdir(parents=True, exist_ok=True)
    for new, old in mapping.items():
        folder = root / subfolder if subfolder else root
        folder.mkdir(exist_ok=True)
        image = cv2.imread(str(src / "val" / f"{old}.png"))
        if scale != 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"{new}.png"), image)


def test_snippets_around_labelled_frames(sample, tmp_path):
    src, _ = sample
    raw = tmp_path / "raw"
    (raw / "val").mkdir(parents=True)
    (raw / "valannot").mkdir()
    for name in VAL[:2]:  # 07959, 07961; no list file: the folder is listed
        shutil.copy(src / "val" / f"{name}.png", raw / "val")
        shutil.copy(src / "valannot" / f"{name}.png", raw / "valannot")
    seq = tmp_path / "frames30"
    # 07958 flat; 07960 in the drive's folder and at 2x size (resized back); 07962 flat.
    _fake_sequence(src, seq, {"0016E5_07957": VAL[3], "0016E5_07958": VAL[2],
                              "0016E5_07962": VAL[3],
                              "0016E5_07959": VAL[0], "0016E5_07961": VAL[1]})
    _fake_sequence(src, seq, {"0016E5_07960": VAL[2]}, subfolder="0016E5", scale=2)

    cfg = camvid.custom_config(frames_before=1, frames_after=1, sequence_dir=seq)
    builder = camvid.build(str(tmp_path / "tfds"), raw, cfg, num_workers=1)
    assert list(builder.info.splits) == ["validation"]
    source = builder.as_data_source("validation")
    assert len(source) == 2
    ex = source[1]  # around 07961: 07960, 07961 (labelled), 07962
    features.validate_snippet(ex, num_classes=camvid.NUM_CLASSES)
    assert ex["frames"].shape == (3, 360, 480, 3)
    assert ex["has_label"].tolist() == [False, True, False] and int(ex["label_index"]) == 1
    assert np.all(ex["labels"][[0, 2]] == 255)
    raw_label = cv2.imread(str(src / "valannot" / f"{VAL[1]}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ex["labels"][1], np.where(raw_label == 11, 255, raw_label))
    np.testing.assert_array_equal(ex["frames"][1], _read_rgb(src / "val" / f"{VAL[1]}.png"))
    np.testing.assert_array_equal(ex["frames"][2], _read_rgb(src / "val" / f"{VAL[3]}.png"))
    # The 2x frame was resized back to the labelled frame's size.
    diff = np.abs(ex["frames"][0].astype(int) - _read_rgb(src / "val" / f"{VAL[2]}.png")).mean()
    assert diff < 3.0

    # label_all_frames: 07959 is a labelled entry of the same split, two frames before 07961.
    cfg = camvid.custom_config(frames_before=2, frames_after=0, sequence_dir=seq,
                               label_all_frames=True)
    builder = camvid.build(str(tmp_path / "tfds"), raw, cfg, num_workers=1)
    ex = builder.as_data_source("validation")[1]
    assert ex["has_label"].tolist() == [True, False, True]
    assert int(ex["label_index"]) == 2 and np.any(ex["labels"][0] != 255)

    # A 30 fps frame the window needs is absent: the error names it (07956 for 07959).
    with pytest.raises(camvid.BadExample, match="0016E5_07956"):
        camvid.build(str(tmp_path / "tfds2"), raw,
                     camvid.custom_config(frames_before=3, frames_after=0, sequence_dir=seq),
                     num_workers=1)


# --- bad input on small synthetic files -----------------------------------------------------

SMALL = (24, 32)


def _make_raw(root: pathlib.Path, n: int = 4, split_list: bool = True) -> pathlib.Path:
    """A tiny CamVid-like manual dir with ``n`` train pairs of random content."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    lines = []
    for i in range(n):
        name = f"0001TP_{i * 30:06d}"
        cv2.imwrite(str(root / "train" / f"{name}.png"),
                    rng.integers(0, 256, (*SMALL, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "trainannot" / f"{name}.png"),
                    rng.integers(0, 12, SMALL, dtype=np.uint8))
        lines.append(f"/SegNet/CamVid/train/{name}.png /SegNet/CamVid/trainannot/{name}.png")
    if split_list:
        (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def _truncate(path: pathlib.Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


SMALL_CFG = camvid.custom_config(image_size=SMALL)


def _build(tmp_path, raw, **kwargs):
    return camvid.build(str(tmp_path / "tfds"), raw, SMALL_CFG, num_workers=1, **kwargs)


def test_small_synthetic_build_and_resize(tmp_path):
    raw = _make_raw(tmp_path / "raw", split_list=False)
    builder = _build(tmp_path, raw)
    ex = builder.as_data_source("train")[2]
    assert ex["frames"].shape == (1, *SMALL, 3)
    assert set(np.unique(ex["labels"]).tolist()) <= set(range(11)) | {255}
    resized = camvid.build(str(tmp_path / "tfds"), raw,
                           camvid.custom_config(resize=(12, 16)), num_workers=1)
    ex = resized.as_data_source("train")[0]
    assert ex["frames"].shape == (1, 12, 16, 3) and ex["labels"].shape == (1, 12, 16)


@pytest.mark.parametrize("folder,what", [("train", "image"), ("trainannot", "label")])
def test_truncated_file_is_named(tmp_path, folder, what):
    raw = _make_raw(tmp_path / "raw")
    bad = raw / folder / "0001TP_000030.png"
    _truncate(bad)
    with pytest.raises(camvid.BadExample, match=rf"{bad}.*(truncated|cannot read)"):
        _build(tmp_path, raw)


def test_missing_label_is_named(tmp_path):
    raw = _make_raw(tmp_path / "raw")
    (raw / "trainannot" / "0001TP_000060.png").unlink()
    with pytest.raises(camvid.BadExample, match=r"0001TP_000060.png: label file is missing"):
        _build(tmp_path, raw)


def test_size_mismatch_names_both(tmp_path):
    raw = _make_raw(tmp_path / "raw")
    cv2.imwrite(str(raw / "trainannot" / "0001TP_000000.png"), np.zeros((20, 32), np.uint8))
    with pytest.raises(camvid.BadExample, match=r"size mismatch: image .*train/0001TP_000000"
                                                r".png is 32x24 but label .*trainannot/"
                                                r"0001TP_000000.png is 32x20"):
        _build(tmp_path, raw)


def test_unknown_label_id_and_colour_labels(tmp_path):
    raw = _make_raw(tmp_path / "raw", n=2)
    label = raw / "trainannot" / "0001TP_000030.png"
    cv2.imwrite(str(label), np.full(SMALL, 12, np.uint8))
    with pytest.raises(camvid.BadExample, match=rf"{label}.*unknown label ids: 12"):
        _build(tmp_path, raw)
    # Colour-encoded labels, decoded with CAMVID_COLORS.
    ids = np.random.default_rng(1).integers(0, 12, SMALL)
    table = {v if v != 255 else 11: k for k, v in camvid.CAMVID_COLORS.items()}
    for name in ("0001TP_000000", "0001TP_000030"):
        rgb = np.array([table[int(i)] for i in ids.ravel()], np.uint8).reshape(*SMALL, 3)
        cv2.imwrite(str(raw / "trainannot" / f"{name}.png"), rgb[..., ::-1])
    with pytest.raises(camvid.BadExample, match="label_format='colors'"):
        _build(tmp_path, raw)
    cfg = camvid.custom_config(image_size=SMALL, label_format="colors")
    builder = camvid.build(str(tmp_path / "tfds"), raw, cfg, num_workers=1)
    got = builder.as_data_source("train")[0]["labels"][0]
    np.testing.assert_array_equal(got, np.where(ids == 11, 255, ids))


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _build(tmp_path, tmp_path / "nowhere")
    raw = tmp_path / "raw"
    (raw / "other").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no split folders.*trainannot"):
        _build(tmp_path, raw)
    (raw / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"label folder .*trainannot is missing"):
        _build(tmp_path, raw)
    (raw / "trainannot").mkdir()
    with pytest.raises(ValueError, match=r"no images in .*train"):
        _build(tmp_path, raw)
    (raw / "train.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"train.txt lists no frames"):
        _build(tmp_path, raw)


def test_skip_bad_skips_and_reports(tmp_path, capsys):
    raw = _make_raw(tmp_path / "raw", n=5)
    _truncate(raw / "train" / "0001TP_000030.png")
    (raw / "trainannot" / "0001TP_000090.png").unlink()
    builder = _build(tmp_path, raw, skip_bad=True)
    source = builder.as_data_source("train")
    assert len(source) == 3
    assert [int(source[i]["snippet_id"]) for i in range(3)] == [0, 2, 4]
    report = capsys.readouterr().out
    assert "skipped 2 bad example(s)" in report
    assert "0001TP_000030.png" in report and "0001TP_000090.png" in report
    assert len(builder.info.metadata["skipped"]["train"]) == 2
    # The same data without skip_bad fails on the first bad entry.
    with pytest.raises(camvid.BadExample, match="0001TP_000030.png"):
        camvid.build(str(tmp_path / "tfds_strict"), raw, SMALL_CFG, num_workers=1)


def test_interrupted_build_does_not_look_complete(tmp_path, monkeypatch):
    raw = _make_raw(tmp_path / "raw", n=5)
    real = camvid.load_example

    def failing(cfg, entry, labelled=None):
        if entry.index == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real(cfg, entry, labelled)

    monkeypatch.setattr(camvid, "load_example", failing)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path, raw)
    builder = camvid.make_builder(str(tmp_path / "tfds"), SMALL_CFG)
    assert not builder.is_prepared()
    monkeypatch.setattr(camvid, "load_example", real)
    builder = _build(tmp_path, raw)
    assert len(builder.as_data_source("train")) == 5
