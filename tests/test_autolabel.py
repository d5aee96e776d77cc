"""python -m vsegjax.autolabel on a small rendered video written as PNG files."""

import hashlib
import json
import pathlib

import cv2
import numpy as np
import pytest

from vsegjax import autolabel
from vsegjax.data import synthetic
from vsegjax.evaluation import confusion_matrix, iou_from_confusion

C = len(synthetic.CLASSES)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """8 frames 48x96 in frames/, labels of frames 0 and 7 in labels/, truth kept aside."""
    root = tmp_path_factory.mktemp("video")
    ex = synthetic.generate_snippet(synthetic.SyntheticConfig(height=48, width=96,
                                                              num_frames=8, seed=11), "train", 0)
    (root / "frames").mkdir()
    (root / "labels").mkdir()
    for t, f in enumerate(ex["frames"]):
        cv2.imwrite(str(root / "frames" / f"f{t:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    for t in (0, 7):
        cv2.imwrite(str(root / "labels" / f"f{t:03d}.png"), ex["labels"][t])
    return root, ex["labels"]


def _digest(folder: pathlib.Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _miou(out: pathlib.Path, truth: np.ndarray) -> float:
    cm = np.zeros((C, C), np.int64)
    for t in range(1, 7):
        lab = cv2.imread(str(out / "labels" / f"f{t:03d}.png"), cv2.IMREAD_UNCHANGED)
        cm += np.asarray(confusion_matrix(lab, truth[t], C))
    return float(iou_from_confusion(cm)[0])


def test_flow_beats_copy_and_inputs_stay_untouched(video, tmp_path):
    root, truth = video
    before = _digest(root / "frames") + _digest(root / "labels")
    scores = {}
    for method in ("copy", "flow"):
        out = tmp_path / method
        rc = autolabel.main([f"--frames={root / 'frames'}", f"--labels={root / 'labels'}",
                             f"--out={out}", f"--method={method}", f"--num_classes={C}",
                             "--max_side=0"])
        assert rc == 0
        names = sorted(p.name for p in (out / "labels").iterdir())
        assert names == [f"f{t:03d}.png" for t in range(8)]
        assert len(list((out / "overlay").iterdir())) == 8
        for t in (0, 7):  # labelled frames keep their label exactly
            lab = cv2.imread(str(out / "labels" / f"f{t:03d}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(lab, truth[t])
        scores[method] = _miou(out, truth)
        summary = json.loads((out / "autolabel.json").read_text())
        assert summary["frames"] == 8 and summary["labelled_frames"] == ["f000.png", "f007.png"]
    assert scores["flow"] > scores["copy"], scores
    assert _digest(root / "frames") + _digest(root / "labels") == before


def test_min_confidence_and_max_side(video, tmp_path):
    root, truth = video
    out = tmp_path / "o"
    summary = autolabel.autolabel(str(root / "frames"), str(root / "labels"), str(out), "flow",
                                  C, max_side=48, min_confidence=0.9)
    assert summary["working_size"] == [24, 48] and summary["input_size"] == [48, 96]
    lab = cv2.imread(str(out / "labels" / "f003.png"), cv2.IMREAD_UNCHANGED)
    assert lab.shape == (48, 96)
    share = (lab == 255).mean()
    assert 0.0 < share < 0.5, share  # boundary pixels only
    assert summary["ignored_share"] > 0


def test_bad_inputs_are_named(video, tmp_path, capsys):
    root, _ = video
    bad = tmp_path / "bad_labels"
    bad.mkdir()
    cv2.imwrite(str(bad / "f002.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(autolabel.AutolabelError, match="f002.png.*10x10.*96x48"):
        autolabel.autolabel(str(root / "frames"), str(bad), str(tmp_path / "o"), "copy", C)
    cv2.imwrite(str(bad / "f002.png"), np.full((48, 96), 40, np.uint8))
    with pytest.raises(autolabel.AutolabelError, match=r"f002.png has ids \[40\]"):
        autolabel.autolabel(str(root / "frames"), str(bad), str(tmp_path / "o"), "copy", C)
    cv2.imwrite(str(bad / "zzz.png"), np.zeros((48, 96), np.uint8))
    (bad / "f002.png").unlink()
    with pytest.raises(autolabel.AutolabelError, match="zzz.png has no frame"):
        autolabel.autolabel(str(root / "frames"), str(bad), str(tmp_path / "o"), "copy", C)
    with pytest.raises(autolabel.AutolabelError, match="inside the --frames folder"):
        autolabel.autolabel(str(root / "frames"), str(root / "labels"),
                            str(root / "frames" / "out"), "copy", C)
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in (root / "frames").iterdir():
        frames.joinpath(p.name).write_bytes(p.read_bytes())
    frames.joinpath("f004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(autolabel.AutolabelError, match="f004.png"):
        autolabel.autolabel(str(frames), str(root / "labels"), str(tmp_path / "o"), "copy", C)
    assert autolabel.main(["--frames=/nonexistent", f"--labels={root / 'labels'}",
                           f"--out={tmp_path / 'o'}", "--method=copy", "--num_classes=3"]) == 2
    assert autolabel.main([f"--frames={root / 'frames'}", f"--labels={root / 'labels'}",
                           f"--out={tmp_path / 'o'}", "--method=warp_refine", "--num_classes=3",
                           "--strides=1,x"]) == 2
    assert "--strides=1,x" in capsys.readouterr().err


def test_warp_refine_trains_then_reuses_its_refiner(video, tmp_path):
    root, truth = video
    out = tmp_path / "wr"
    summary = autolabel.autolabel(str(root / "frames"), str(root / "labels"), str(out),
                                  "warp_refine", C, max_side=0, train_steps=2, k=2)
    assert (out / "refiner" / "config.json").is_file()
    assert (out / "refiner" / "checkpoints").is_dir()  # an interrupted run resumes
    assert 0.0 < summary["mean_confidence"] <= 1.0
    first = _miou(out, truth)
    again = autolabel.autolabel(str(root / "frames"), str(root / "labels"), str(tmp_path / "b"),
                                "warp_refine", C, max_side=0, refiner=str(out))
    assert "refiner" not in {p.name for p in (tmp_path / "b").iterdir()}
    assert abs(_miou(tmp_path / "b", truth) - first) < 1e-9
    assert again["frames"] == 8
    with pytest.raises(autolabel.AutolabelError, match="classes"):
        autolabel.autolabel(str(root / "frames"), str(root / "labels"), str(tmp_path / "c"),
                            "warp_refine", C + 1, refiner=str(out))
