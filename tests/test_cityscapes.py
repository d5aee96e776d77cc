"""The Cityscapes sequence builder on a tiny fixture of the official layout: windows around
the gtFine frame (frame numbers are encoded in the pixels), label ids -> train ids, coarse
labels, demoVideo windows, and every kind of bad input."""

import pathlib

import cv2
import numpy as np
import pytest

from vsegjax.data import cityscapes, features
from vsegjax.evaluation import segmentation

SMALL = (64, 128)  # (height, width)
# split folder -> [(city, sequence, labelled frame number)]
SNIPPETS = {"train": [("aachen", 0, 19), ("bochum", 3, 119)],
            "val": [("frankfurt", 0, 19)],
            "test": [("berlin", 7, 19)]}
DEMO_FRAMES = 40
# Label ids in the four quadrants and the train ids they must become.
QUADRANT_IDS = (7, 26, 0, 23)   # road, car, unlabeled, sky
QUADRANT_TRAIN = (0, 13, 255, 10)


def _frame(number: int, city_code: int, size=SMALL) -> np.ndarray:
    """An RGB frame whose R channel is the frame number mod 200 and G the city code."""
    image = np.zeros((*size, 3), np.uint8)
    image[..., 0] = number % 200
    image[..., 1] = city_code
    image[..., 2] = 50
    return image


def _label(ids=QUADRANT_IDS, size=SMALL) -> np.ndarray:
    h, w = size
    label = np.zeros(size, np.uint8)
    label[:h // 2, :w // 2], label[:h // 2, w // 2:] = ids[0], ids[1]
    label[h // 2:, :w // 2], label[h // 2:, w // 2:] = ids[2], ids[3]
    return label


def _write_rgb(path: pathlib.Path, rgb: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def _write_grey(path: pathlib.Path, grey: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), grey)


def _city_code(city: str) -> int:
    return {"aachen": 1, "bochum": 2, "frankfurt": 3, "berlin": 4, "stuttgart_00": 5}[city]


def _seq_path(root, split, city, seq, frame):
    return (root / "leftImg8bit_sequence" / split / city
            / f"{city}_{seq:06d}_{frame:06d}_leftImg8bit.png")


def _label_path(root, kind, split, city, seq, frame):
    return root / kind / split / city / f"{city}_{seq:06d}_{frame:06d}_{kind}_labelIds.png"


def make_raw(root: pathlib.Path, demo: bool = True) -> pathlib.Path:
    """The official layout: 30-frame snippets, gtFine (+ the distractor files), gtCoarse for
    one train snippet, and a 40-frame demoVideo sequence."""
    for split, snippets in SNIPPETS.items():
        for city, seq, labelled in snippets:
            for frame in range(labelled - 19, labelled + 11):
                _write_rgb(_seq_path(root, split, city, seq, frame),
                           _frame(frame, _city_code(city)))
            label = _label_path(root, "gtFine", split, city, seq, labelled)
            _write_grey(label, _label(QUADRANT_IDS if split != "test" else (0, 1, 2, 3)))
            # The other gtFine files must be ignored.
            _write_rgb(label.with_name(label.name.replace("labelIds", "color")),
                       np.full((*SMALL, 3), 128, np.uint8))
            label.with_name(label.name.replace("labelIds.png", "polygons.json")).write_text("{}")
    _write_grey(_label_path(root, "gtCoarse", "train", "aachen", 0, 19),
                _label((7, 0, 33, 8)))  # road, unlabeled, bicycle, sidewalk
    if demo:
        for frame in range(DEMO_FRAMES):
            _write_rgb(root / "leftImg8bit" / "demoVideo" / "stuttgart_00"
                       / f"stuttgart_00_000000_{frame:06d}_leftImg8bit.png",
                       _frame(frame, 5))
    return root


SMALL_CFG = cityscapes.custom_config(image_size=SMALL)


def _build(data_dir, raw, config=SMALL_CFG, **kwargs):
    return cityscapes.build(str(data_dir), raw, config, num_workers=kwargs.pop("num_workers", 1),
                            **kwargs)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_raw(tmp_path_factory.mktemp("cityscapes_raw"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def _frame_numbers(frames: np.ndarray) -> list[int]:
    return [int(f[..., 0].mean().round()) for f in frames]


# --- pure helpers ------------------------------------------------------------------------

def test_names_configs_and_tables():
    assert cityscapes.parse_name("aachen_000012_000019_gtFine_labelIds.png") == ("aachen", 12, 19)
    assert cityscapes.parse_name("stuttgart_00_000000_000123_leftImg8bit.png") == (
        "stuttgart_00", 0, 123)
    with pytest.raises(ValueError, match="not a Cityscapes file name"):
        cityscapes.parse_name("frame_12.png")
    assert cityscapes.custom_config() is cityscapes.DEFAULT
    assert cityscapes.custom_config(frames_before=4, frames_after=0,
                                    resize=(512, 1024)) is cityscapes.T5_HALF
    assert cityscapes.custom_config(mode="coarse") is cityscapes.COARSE
    assert cityscapes.custom_config(mode="demo_video", demo_stride=30) is cityscapes.DEMO_VIDEO
    assert SMALL_CFG.name == "t19-10_64x128" and SMALL_CFG.num_frames == 30
    assert cityscapes.custom_config(mode="demo_video", demo_frames=8, demo_stride=4,
                                    resize=(32, 64)).name == "demo_t8-s4_32x64"
    with pytest.raises(ValueError, match="mode"):
        cityscapes.custom_config(mode="extra")
    with pytest.raises(ValueError, match="frames_before"):
        cityscapes.custom_config(frames_before=-1)
    with pytest.raises(ValueError, match="resize"):
        cityscapes.custom_config(resize=(4, 4))
    # All 34 label ids map; -1 (license plate, 255 as uint8) is ignored; others raise.
    raw_ids = np.array([list(range(34)) + [255]], np.uint8)
    want = [cityscapes.CITYSCAPES_TO_TRAIN.get(i, 255) for i in range(34)] + [255]
    np.testing.assert_array_equal(cityscapes.LABELS.decode_ids(raw_ids)[0], want)
    assert sorted(set(want) - {255}) == list(range(19))
    with pytest.raises(ValueError, match="unknown label ids: 40"):
        cityscapes.LABELS.decode_ids(np.array([[7, 40]], np.uint8))
    assert len(cityscapes.CLASS_NAMES) == 19 and cityscapes.CLASS_NAMES[13] == "car"
    assert cityscapes.CATEGORIES is segmentation.CITYSCAPES_CATEGORIES
    assert len(cityscapes.CATEGORIES) == 19 and max(cityscapes.CATEGORIES) == 6


# --- builds ---------------------------------------------------------------------------------

def test_fine_snippets(raw, data_dir):
    builder = _build(data_dir / "fine", raw, num_workers=2)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 2, "validation": 1, "test": 1}
    assert builder.info.metadata["names"]["train"] == ["aachen_000000_000019",
                                                       "bochum_000003_000119"]
    for split, folder in (("train", "train"), ("validation", "val"), ("test", "test")):
        source = builder.as_data_source(split)
        for i, (city, _, labelled) in enumerate(SNIPPETS[folder]):
            ex = source[i]
            features.validate_snippet(ex, num_classes=cityscapes.NUM_CLASSES)
            assert ex["frames"].shape == (30, *SMALL, 3) and ex["labels"].shape == (30, *SMALL)
            assert _frame_numbers(ex["frames"]) == [
                f % 200 for f in range(labelled - 19, labelled + 11)]
            assert np.all(ex["frames"][..., 1] == _city_code(city))
            assert int(ex["label_index"]) == 19 and int(ex["frame_index"]) == labelled
            assert int(ex["snippet_id"]) == i
            others = np.delete(ex["labels"], 19, axis=0)
            assert np.all(others == 255)
            if split == "test":  # labels withheld by Cityscapes
                assert not ex["has_label"].any() and np.all(ex["labels"] == 255)
            else:
                assert ex["has_label"].tolist() == [t == 19 for t in range(30)]
                np.testing.assert_array_equal(ex["labels"][19], _label(QUADRANT_TRAIN))


def test_short_window_resized(raw, data_dir):
    cfg = cityscapes.custom_config(frames_before=4, frames_after=1, resize=(32, 64))
    assert cfg.name == "t4-1_32x64"
    builder = _build(data_dir / "short", raw, cfg)
    ex = builder.as_data_source("train")[1]  # bochum, labelled 119
    assert ex["frames"].shape == (6, 32, 64, 3)
    assert _frame_numbers(ex["frames"]) == [115, 116, 117, 118, 119, 120]
    assert ex["has_label"].tolist() == [False] * 4 + [True, False]
    assert int(ex["label_index"]) == 4
    np.testing.assert_array_equal(ex["labels"][4], _label(QUADRANT_TRAIN, (32, 64)))


def test_coarse_labels(raw, data_dir, caplog):
    cfg = cityscapes.custom_config(mode="coarse", frames_before=2, frames_after=0,
                                   image_size=SMALL)
    builder = _build(data_dir / "coarse", raw, cfg)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 1}
    ex = builder.as_data_source("train")[0]
    assert _frame_numbers(ex["frames"]) == [17, 18, 19]
    np.testing.assert_array_equal(ex["labels"][2], _label((0, 255, 18, 1)))
    assert ex["has_label"].tolist() == [False, False, True]
    assert "gtCoarse/val is not" in caplog.text  # half-present split, noted


def test_demo_video_windows(raw, data_dir):
    cfg = cityscapes.custom_config(mode="demo_video", demo_frames=8, demo_stride=5,
                                   image_size=SMALL)
    builder = _build(data_dir / "demo", raw, cfg)
    assert list(builder.info.splits) == ["demo"]
    source = builder.as_data_source("demo")
    assert len(source) == 7  # starts 0, 5, ..., 30 (a window from 35 would need 42)
    assert builder.info.metadata["names"]["demo"][2] == "stuttgart_00/000010"
    ex = source[6]
    features.validate_snippet(ex, num_classes=cityscapes.NUM_CLASSES)
    assert _frame_numbers(ex["frames"]) == list(range(30, 38))
    assert not ex["has_label"].any() and np.all(ex["labels"] == 255)
    assert int(ex["label_index"]) == 7 and int(ex["frame_index"]) == 37


# --- bad input -------------------------------------------------------------------------------

@pytest.fixture
def fresh(tmp_path):
    return make_raw(tmp_path / "raw", demo=False)


def test_missing_sequence_frame_is_named(fresh, tmp_path):
    missing = _seq_path(fresh, "train", "bochum", 3, 125)
    missing.unlink()
    with pytest.raises(cityscapes.BadExample, match=rf"{missing}: sequence frame is missing"):
        _build(tmp_path / "tfds", fresh)
    # A window reaching beyond the 30-frame snippet names the frame it lacks.
    cfg = cityscapes.custom_config(frames_before=20, frames_after=0, image_size=SMALL)
    with pytest.raises(cityscapes.BadExample, match=r"aachen_000000_-00001_leftImg8bit.png: "
                                                    r"sequence frame is missing.*beyond"):
        _build(tmp_path / "tfds", fresh, cfg)


def test_label_size_mismatch_names_both(fresh, tmp_path):
    label = _label_path(fresh, "gtFine", "val", "frankfurt", 0, 19)
    _write_grey(label, np.zeros((32, 128), np.uint8))
    frame = _seq_path(fresh, "val", "frankfurt", 0, 19)
    with pytest.raises(cityscapes.BadExample,
                       match=rf"size mismatch: frame {frame} is 128x64 but label {label} "
                             rf"is 128x32"):
        _build(tmp_path / "tfds", fresh)


@pytest.mark.parametrize("which", ["frame", "label"])
def test_unreadable_png_is_named(fresh, tmp_path, which):
    bad = (_seq_path(fresh, "train", "aachen", 0, 3) if which == "frame"
           else _label_path(fresh, "gtFine", "train", "aachen", 0, 19))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(cityscapes.BadExample, match=rf"{bad}.*(cannot decode|cannot read|truncated)"):
        _build(tmp_path / "tfds", fresh)


def test_wrong_label_kind_is_named(fresh, tmp_path):
    label = _label_path(fresh, "gtFine", "train", "bochum", 3, 119)
    _write_grey(label, np.full(SMALL, 40, np.uint8))  # not a labelIds image
    with pytest.raises(cityscapes.BadExample, match=rf"{label}.*unknown label ids: 40"):
        _build(tmp_path / "tfds", fresh)


def test_missing_or_empty_manual_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*leftImg8bit_sequence/"):
        _build(tmp_path / "tfds", tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)missing or empty.*leftImg8bit_sequence/"):
        _build(tmp_path / "tfds", empty)
    (empty / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError,
                       match=r"no complete split.*leftImg8bit_sequence/train is not"):
        _build(tmp_path / "tfds", empty)
    (empty / "leftImg8bit_sequence" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no \*_gtFine_labelIds.png files"):
        _build(tmp_path / "tfds", empty)
    with pytest.raises(FileNotFoundError, match=r"no complete split.*demoVideo"):
        _build(tmp_path / "tfds", empty, cityscapes.custom_config(mode="demo_video"))


def test_skip_bad_skips_and_reports(fresh, tmp_path, capsys):
    _seq_path(fresh, "train", "aachen", 0, 0).unlink()
    builder = _build(tmp_path / "tfds", fresh, skip_bad=True)
    source = builder.as_data_source("train")
    assert len(source) == 1 and int(source[0]["snippet_id"]) == 1
    report = capsys.readouterr().out
    assert "skipped 1 bad example(s)" in report
    assert "aachen_000000_000000_leftImg8bit.png" in report
    assert builder.info.metadata["skipped"]["train"][0]["what"] == "aachen_000000_000019"
    with pytest.raises(cityscapes.BadExample, match="aachen_000000_000000"):
        _build(tmp_path / "tfds_strict", fresh)


def test_interrupted_build_does_not_look_complete(fresh, tmp_path, monkeypatch):
    real = cityscapes.load_example

    def failing(cfg, entry):
        if entry.name.startswith("bochum"):
            raise KeyboardInterrupt("simulated interruption")
        return real(cfg, entry)

    monkeypatch.setattr(cityscapes, "load_example", failing)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "tfds", fresh)
    assert not cityscapes.make_builder(str(tmp_path / "tfds"), SMALL_CFG).is_prepared()
    monkeypatch.setattr(cityscapes, "load_example", real)
    builder = _build(tmp_path / "tfds", fresh)
    assert len(builder.as_data_source("train")) == 2
