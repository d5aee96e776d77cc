"""python -m vsegjax.autolabel on a small rendered video written as PNG files."""

import ast
import json
import os
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest
from _autolabel_cli import run_autolabel, tree_digest

from vsegjax import autolabel
from vsegjax.data import frame_sources, synthetic
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


def _miou(out: pathlib.Path, truth: np.ndarray) -> float:
    cm = np.zeros((C, C), np.int64)
    for t in range(1, 7):
        lab = cv2.imread(str(out / "labels" / f"f{t:03d}.png"), cv2.IMREAD_UNCHANGED)
        cm += np.asarray(confusion_matrix(lab, truth[t], C))
    return float(iou_from_confusion(cm)[0])


def test_flow_beats_copy_and_inputs_stay_untouched(video, tmp_path):
    root, truth = video
    before = tree_digest(root / "frames") + tree_digest(root / "labels")
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
    assert tree_digest(root / "frames") + tree_digest(root / "labels") == before


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


@pytest.mark.slow
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


# 1. autolabel --out=clip with clip/labels as --labels rewrote the user's labels.
def test_autolabel_refuses_an_out_whose_labels_folder_is_the_input(clip, capsys):
    before = tree_digest(clip)
    assert run_autolabel(clip, clip) == 2
    err = capsys.readouterr().err
    assert "writes" in err and "labels" in err and "--labels folder" in err
    assert err.count("\n") == 1
    assert tree_digest(clip) == before
    # An output folder that holds an input is refused too (overlay/ holding --frames).
    nested = clip.parent / "nested"
    (nested / "overlay").mkdir(parents=True)
    os.rename(clip / "frames", nested / "overlay" / "frames")
    with pytest.raises(autolabel.AutolabelError, match="holds the --frames folder"):
        autolabel.autolabel(str(nested / "overlay" / "frames"), str(clip / "labels"),
                            str(nested), "copy", C)
    # --out holding the inputs, with other output folders, is fine.
    os.rename(nested / "overlay" / "frames", clip / "frames")
    fine = clip.parent / "work"
    (fine / "src").mkdir(parents=True)
    os.rename(clip / "labels", fine / "src" / "labels")
    os.rename(clip / "frames", fine / "src" / "frames")
    assert autolabel.main([f"--frames={fine / 'src' / 'frames'}",
                           f"--labels={fine / 'src' / 'labels'}", f"--out={fine}",
                           "--method=copy", f"--num_classes={C}"]) == 0
    assert len(list((fine / "labels").iterdir())) == 6


# 4. Two frames with one stem overwrote each other's outputs; a '..' stem was skipped.
def test_frames_sharing_a_stem_are_refused_naming_both(clip, tmp_path, capsys):
    frame = cv2.imread(str(clip / "frames" / "00001.png"))
    cv2.imwrite(str(clip / "frames" / "00001.jpg"), frame)
    assert run_autolabel(clip, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "00001.jpg" in err and "00001.png" in err and "same stem" in err
    assert not (tmp_path / "out").exists()
    (clip / "frames" / "00001.jpg").unlink()
    cv2.imwrite(str(clip / "frames" / "...png"), frame)
    with pytest.raises(FileNotFoundError, match=r"\.\.\.png has the file stem '\.\.'"):
        frame_sources.list_images(clip / "frames", "--frames")
    assert run_autolabel(clip, tmp_path / "out") == 2
    assert "'..'" in capsys.readouterr().err


# 7c. A second video's warp_refine with the same --out reused the first video's refiner.
@pytest.mark.slow
def test_warp_refine_does_not_reuse_a_refiner_of_other_frames(clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_autolabel(clip, out, "warp_refine", train_steps=2, k=2) == 0
    assert (out / "refiner" / "trained_on.json").is_file()
    # The same video again resumes (nothing to train: the last step is saved).
    assert run_autolabel(clip, out, "warp_refine", train_steps=2, k=2) == 0
    capsys.readouterr()
    other = tmp_path / "other"
    (other / "frames").mkdir(parents=True)
    (other / "labels").mkdir()
    for p in sorted((clip / "frames").iterdir()):
        image = cv2.imread(str(p))
        cv2.imwrite(str(other / "frames" / p.name), 255 - image)  # another video
    for p in (clip / "labels").iterdir():
        (other / "labels" / p.name).write_bytes(p.read_bytes())
    before = tree_digest(out / "refiner")
    assert run_autolabel(other, out, "warp_refine", train_steps=2, k=2) == 2
    err = capsys.readouterr().err
    assert "trained on other frames or labels" in err and "data_sha256" in err
    assert tree_digest(out / "refiner") == before
    # Other settings (the flow) are named as such.
    assert run_autolabel(clip, out, "warp_refine", train_steps=2, k=2, flow="farneback") == 2
    err = capsys.readouterr().err
    assert "other settings (flow)" in err


@pytest.mark.slow
def test_a_refiner_is_checked_against_its_config_before_reading(clip, tmp_path, capsys,
                                                                forbid_reads):
    out = tmp_path / "out"
    assert run_autolabel(clip, out, "warp_refine", train_steps=1, k=2) == 0
    received = tmp_path / "received"
    shutil.copytree(out / "refiner", received)
    record = json.loads((received / "config.json").read_text())
    width = record["warp_refine"].get("refiner_width", 32)
    record["warp_refine"]["refiner_width"] = width * 2  # a checkpoint that is not its config
    (received / "config.json").write_text(json.dumps(record))
    capsys.readouterr()
    forbid_reads()
    assert run_autolabel(clip, tmp_path / "again", "warp_refine", refiner=received) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    found = re.search(rf"--refiner {re.escape(str(received))}: parameter params/refiner/\S+ "
                      rf"has shape (\(.*\)) in the checkpoint, this config expects (\(.*\))$",
                      err.strip())
    assert found, err
    saved, expected = (ast.literal_eval(g) for g in found.groups())
    assert [b // a for a, b in zip(saved, expected) if a != b] == [2]  # the doubled width


# 8. --out naming a file failed with NotADirectoryError after the flow was computed;
# an unwritable --out with PermissionError.
def test_bad_out_paths_fail_before_any_work(clip, tmp_path, capsys, monkeypatch):
    def no_flow(*a, **k):
        raise AssertionError("flow computed before --out was checked")
    monkeypatch.setattr(autolabel.prop, "video_flows", no_flow)
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    assert run_autolabel(clip, a_file, "flow") == 2
    assert "is an existing file" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert run_autolabel(clip, locked / "out", "flow") == 2
            assert "permission denied" in capsys.readouterr().err
        finally:
            locked.chmod(0o700)
    # --flow=<not a checkpoint> names the flag, not a config field.
    not_ckpt = tmp_path / "not_a_checkpoint"
    not_ckpt.mkdir()
    assert run_autolabel(clip, tmp_path / "o2", "flow", flow=not_ckpt) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --flow={not_ckpt}") and "config field" not in err
