"""camvid_sequence: GRFP snippets of CamVid's labelled val sequence, split in time.

The split is the point: no held-out frame may appear in a training snippet, and every
snippet must be consecutive frames of the video."""

import pathlib
import shutil

import cv2
import numpy as np
import pytest

from vsegjax.data import camvid, camvid_sequence, snippet_builder


@pytest.mark.parametrize("num_frames,t,split_at", [(101, 5, 50), (20, 3, 7), (12, 1, 6),
                                                   (9, 4, 4)])
def test_windows_never_cross_the_split(num_frames, t, split_at):
    cfg = camvid_sequence.make_config(frames_before=t - 1, split_at=split_at) if t > 1 else \
        camvid_sequence.SequenceConfig(name="x", frames_before=0, split_at=split_at)
    found = camvid_sequence.windows(num_frames, cfg)
    for split, ws in found.items():
        for w in ws:
            assert w == list(range(w[0], w[0] + t))  # consecutive, oldest first
            inside = [i < split_at for i in w]
            assert all(inside) if split == "train" else not any(inside)
    # Every frame that has t - 1 predecessors on its own side ends exactly one snippet.
    assert [w[-1] for w in found["train"]] == list(range(t - 1, split_at))
    assert [w[-1] for w in found["heldout"]] == list(range(split_at + t - 1, num_frames))


def test_default_split_counts():
    found = camvid_sequence.windows(101, camvid_sequence.DEFAULT)
    assert (len(found["train"]), len(found["heldout"])) == (46, 47)
    assert found["train"][-1] == [45, 46, 47, 48, 49] and found["heldout"][0][0] == 50


def _copy_val(src: pathlib.Path, dst: pathlib.Path, names):
    (dst / "val").mkdir(parents=True)
    (dst / "valannot").mkdir()
    for name in names:
        shutil.copy(src / "val" / f"{name}.png", dst / "val")
        shutil.copy(src / "valannot" / f"{name}.png", dst / "valannot")
    return dst


@pytest.fixture(scope="module")
def camvid_val(shared_data):
    src = shared_data / "camvid"
    if not (src / "val").is_dir():
        pytest.skip(f"CamVid sample not found at {src / 'val'}")
    return src


def test_real_sequence_split_on_the_camvid_sample(camvid_val, tmp_path):
    """The real 101-frame val sequence: 46 / 47 snippets, all consecutive (stride 2), the
    training ones wholly before 0016E5_08059 and the held-out ones wholly from it, with the
    files' own pixels and labels."""
    cfg = camvid_sequence.make_config(resize=(45, 60))
    builder = camvid_sequence.build(str(tmp_path / "tfds"), camvid_val, cfg, num_workers=2)
    assert builder.info.metadata["boundary"] == "0016E5_08059"
    boundary = 8059
    seen = {}
    for split, count in (("train", 46), ("heldout", 47)):
        source = builder.as_data_source(split)
        assert len(source) == count
        numbers = []
        for ex in source:
            last = int(ex["frame_index"])
            window = [last - 2 * k for k in range(4, -1, -1)]
            assert bool(np.all(ex["has_label"])) and int(ex["label_index"]) == 4
            assert all(n < boundary for n in window) if split == "train" else \
                all(n >= boundary for n in window)
            numbers.append(last)
        seen[split] = numbers
        # The labelled frame, its label and the oldest frame are the files' own.
        ex = source[len(source) // 2]
        for k, number in ((4, int(ex["frame_index"])), (0, int(ex["frame_index"]) - 8)):
            name = f"0016E5_{number:05d}.png"
            image = cv2.cvtColor(cv2.imread(str(camvid_val / "val" / name)), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(
                ex["frames"][k], snippet_builder.resize(image, (45, 60), nearest=False))
            label = camvid.read_label(camvid_val / "valannot" / name)
            np.testing.assert_array_equal(
                ex["labels"][k], snippet_builder.resize(label, (45, 60), nearest=True))
    assert seen["train"] == list(range(7967, 8058, 2))
    assert seen["heldout"] == list(range(8067, 8160, 2))


def test_a_gap_in_the_sequence_is_named(camvid_val, tmp_path, capsys):
    names = [f"0016E5_{n:05d}" for n in range(7959, 7959 + 2 * 12, 2)]
    del names[8]  # 0016E5_07975 missing: windows over it are not consecutive
    raw = _copy_val(camvid_val, tmp_path / "raw", names)
    cfg = camvid_sequence.make_config(frames_before=2, split_at=6, resize=(24, 32))
    with pytest.raises(snippet_builder.BadExample,
                       match=r"0016E5_07973.png and .*0016E5_07977.png are 4 frame numbers"):
        camvid_sequence.build(str(tmp_path / "tfds"), raw, cfg, num_workers=1)
    builder = camvid_sequence.build(str(tmp_path / "tfds2"), raw, cfg, num_workers=1,
                                    skip_bad=True)
    # heldout: positions 6..10 (the gap is between 7 and 8): windows ending at 8 and 9 skip.
    assert builder.info.splits["heldout"].num_examples == 1
    assert "0016E5_07977" in capsys.readouterr().out


def test_several_drives_are_refused(camvid_val, tmp_path):
    raw = _copy_val(camvid_val, tmp_path / "raw", [f"0016E5_{n:05d}" for n in (7959, 7961)])
    shutil.copy(raw / "val" / "0016E5_07959.png", raw / "val" / "0006R0_f00930.png")
    shutil.copy(raw / "valannot" / "0016E5_07959.png", raw / "valannot" / "0006R0_f00930.png")
    cfg = camvid_sequence.make_config(frames_before=1, split_at=1, resize=(24, 32))
    with pytest.raises(ValueError, match="several drives"):
        camvid_sequence.build(str(tmp_path / "tfds"), raw, cfg, num_workers=1)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="frames_before"):
        camvid_sequence.make_config(frames_before=0)
    with pytest.raises(ValueError, match="source_split"):
        camvid_sequence.make_config(source_split="val")
