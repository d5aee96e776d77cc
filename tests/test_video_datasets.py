"""DAVIS and user-video TFDS builders: real samples, palette masks, and every bad input."""

import hashlib
import pathlib
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from vsegjax.data import features, synthetic, video_datasets
from vsegjax.data import frame_sources as fs
from vsegjax.data import video_datasets as vd

C = len(synthetic.CLASSES)
ROOT = pathlib.Path(__file__).resolve().parents[1]


IGNORE = 255


def _tree(folder):
    """Everything about a folder's files that a build could change."""
    out = {}
    for p in sorted(pathlib.Path(folder).rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        else:
            out[str(p)] = "dir"
    return out


def _build(kind, tmp_path, cfg, manual_dir=None, **kw):
    return vd.build(kind, str(tmp_path / "tfds"), cfg, manual_dir, **kw)


def _all(builder, split):
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


def _write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_ids(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), ids.astype(np.uint8))


def _write_palette(path, ids):
    from PIL import Image
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0] * (256 * 3 - 15)
    palette[-3:] = [224, 224, 192]
    image.putpalette(palette)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _random_frames(folder, names, shape=(20, 30), seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        _write_rgb(folder / name, rng.integers(0, 256, (*shape, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------- DAVIS


@pytest.fixture(scope="module")
def davis_small(shared_data, tmp_path_factory):
    """Two real DAVIS 2016 sequences, 8 frames each, copied (full 854x480) to a tmp root."""
    src = shared_data / "davis2016"
    root = tmp_path_factory.mktemp("davis") / "DAVIS"
    for seq in ("blackswan", "car-shadow"):
        for sub, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            (root / sub / "480p" / seq).mkdir(parents=True)
            for i in range(8):
                name = f"{i:05d}.{ext}"
                shutil.copy(src / sub / "480p" / seq / name, root / sub / "480p" / seq / name)
    return root


def test_davis_real_sample(davis_small, tmp_path):
    before = _tree(davis_small)
    whole = _build("davis", tmp_path, vd.davis_config(resize=(120, 214)), davis_small)
    assert list(whole.info.splits) == ["full"]
    examples = _all(whole, "full")
    assert [e["sequence"] for e in examples] == [b"blackswan", b"car-shadow"]
    seen = set()
    for i, ex in enumerate(examples):
        features.validate_snippet(ex, num_classes=2)
        assert ex["frames"].shape == (8, 120, 214, 3) and ex["labels"].shape == (8, 120, 214)
        assert ex["has_label"].all() and int(ex["label_index"]) == 0
        assert int(ex["snippet_id"]) == i and int(ex["frame_index"]) == 0
        seen |= set(np.unique(ex["labels"]).tolist())
    assert seen == {0, 1}
    mask = cv2.imread(str(davis_small / "Annotations/480p/car-shadow/00003.png"), 0)
    want = cv2.resize((mask == 255).astype(np.uint8), (214, 120),
                      interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(examples[1]["labels"][3], want)
    assert whole.info.metadata["num_classes"] == 2

    windows = _build("davis", tmp_path, vd.davis_config(num_frames=4, stride=2), davis_small)
    examples = _all(windows, "full")
    assert len(examples) == 6  # starts 0, 2, 4 in each of two sequences
    ex = examples[1]
    assert ex["frames"].shape == (4, 480, 854, 3) and ex["sequence"] == b"blackswan"
    assert int(ex["frame_index"]) == 2 and int(ex["label_index"]) == 0  # frames 2..5
    np.testing.assert_array_equal(
        ex["frames"][1], fs.read_frame(davis_small / "JPEGImages/480p/blackswan/00003.jpg"))
    assert ex["has_label"].all() and set(np.unique(ex["labels"]).tolist()) == {0, 1}
    assert _tree(davis_small) == before  # the input is only read


def test_davis_split_files(davis_small, tmp_path):
    sets = tmp_path / "sets"
    sets.mkdir()
    (sets / "train.txt").write_text("blackswan\n")
    # The DAVIS 2016 layout: image/annotation path pairs.
    (sets / "val.txt").write_text("".join(
        f"/JPEGImages/480p/car-shadow/{i:05d}.jpg /Annotations/480p/car-shadow/{i:05d}.png\n"
        for i in range(8)))
    (sets / "trainval.txt").write_text("blackswan\ncar-shadow\n")
    cfg = vd.davis_config(image_sets=str(sets))
    assert vd.davis_splits(davis_small, cfg) == {"train": ["blackswan"], "val": ["car-shadow"]}
    assert vd.davis_splits(davis_small, vd.davis_config()) == {
        "full": ["blackswan", "car-shadow"]}
    (sets / "test-dev.txt").write_text("bmx-trees\n")
    with pytest.raises(FileNotFoundError, match="bmx-trees"):
        vd.davis_splits(davis_small, cfg)


def _davis2017_fixture(root, drop_annotation=False):
    """Two sequences of three 24x32 frames with palette instance masks (ids 1,2 / 1,3)."""
    rng = np.random.default_rng(0)
    ids = {}
    for seq, objects in (("dogs", (1, 2)), ("cars", (1, 3))):
        for t in range(3):
            _write_rgb(root / f"JPEGImages/480p/{seq}/{t:05d}.jpg",
                       rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
            m = np.zeros((24, 32), np.uint8)
            m[2:10, 3 + t:12 + t] = objects[0]
            m[12:20, 15:25 - t] = objects[1]
            ids[seq, t] = m
            if not (drop_annotation and seq == "cars" and t == 1):
                _write_palette(root / f"Annotations/480p/{seq}/{t:05d}.png", m)
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/train.txt").write_text("dogs\n")
    (root / "ImageSets/2017/val.txt").write_text("cars\n")
    return ids


def test_davis2017_palette_masks(tmp_path):
    root = tmp_path / "DAVIS2017"
    ids = _davis2017_fixture(root)
    # OpenCV alone would expand the palette to colours; the builder reads the indices.
    assert cv2.imread(str(root / "Annotations/480p/dogs/00000.png"), -1).ndim == 3
    objects = _build("davis", tmp_path, "2017", root)  # the presets
    instances = _build("davis", tmp_path, "2017_instances", root)
    assert sorted(objects.info.splits) == ["train", "val"]
    for split, seq in (("train", "dogs"), ("val", "cars")):
        (obj,), (inst,) = _all(objects, split), _all(instances, split)
        assert obj["sequence"] == inst["sequence"] == seq.encode()
        for t in range(3):
            np.testing.assert_array_equal(inst["labels"][t], ids[seq, t])
            np.testing.assert_array_equal(obj["labels"][t], (ids[seq, t] > 0).astype(np.uint8))
    assert objects.info.metadata["num_classes"] == 2
    assert instances.info.metadata["num_classes"] == 4  # largest id 3, plus background


def test_davis_bad_inputs(tmp_path):
    root = tmp_path / "DAVIS2017"
    _davis2017_fixture(root, drop_annotation=True)
    missing = root / "Annotations/480p/cars/00001.png"
    with pytest.raises(vd.BadExample, match=re.escape(str(missing))):
        _build("davis", tmp_path, vd.davis_config(2017), root)
    # skip_bad leaves the sequence's snippet out and says which file was missing.
    shutil.rmtree(root / "ImageSets")
    builder = _build("davis", tmp_path, vd.davis_config(2017, skip_bad=True), root)
    assert [e["sequence"] for e in _all(builder, "full")] == [b"dogs"]
    (entry,) = builder.skipped["full"]
    assert entry["files"] == [str(missing)] and "cars" in entry["what"]
    assert builder.info.metadata["skipped"]["full"] == [entry]
    for manual in (tmp_path / "nowhere", tmp_path / "DAVIS2017" / "JPEGImages"):
        with pytest.raises(FileNotFoundError, match=re.escape(str(manual))):
            _build("davis", tmp_path / "other", "2016", manual)
    # A DAVIS 2016 mask must be 0/255.
    seq = tmp_path / "D16"
    _random_frames(seq / "JPEGImages/480p/a", ["00000.jpg"], (8, 8))
    _write_ids(seq / "Annotations/480p/a/00000.png", np.full((8, 8), 128))
    with pytest.raises(ValueError, match="00000.png.*128"):
        _build("davis", tmp_path, "2016", seq)


# ----------------------------------------------------------------------------- user video


def test_user_video_from_real_video(shared_data, tmp_path):
    video = shared_data / "video" / "vtest.avi"
    labels = tmp_path / "labels"
    written = {}
    for number, cls in ((5, 1), (12, 2)):
        ids = np.zeros((576, 768), np.uint8)
        ids[100:300, 200:400] = cls
        ids[:10] = IGNORE
        _write_ids(labels / f"{number:06d}.png", ids)
        written[number] = ids
    before = _tree(labels)
    cfg = vd.user_video_config(video, labels, num_classes=3, max_frames=20, resize=(144, 192))
    builder = _build("user_video", tmp_path, cfg)
    examples = _all(builder, "full")
    assert len(examples) == 2
    cap = cv2.VideoCapture(str(video))
    decoded = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(15)]
    for ex, number in zip(examples, (5, 12)):
        features.validate_snippet(ex, num_classes=3)
        assert ex["frames"].shape == (5, 144, 192, 3) and int(ex["label_index"]) == 2
        assert int(ex["frame_index"]) == number
        np.testing.assert_array_equal(ex["has_label"], [False, False, True, False, False])
        want = cv2.resize(written[number], (192, 144), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(ex["labels"][2], want)
        assert np.all(ex["labels"][[0, 1, 3, 4]] == IGNORE)
        for i in range(5):  # frames number-2 .. number+2
            frame = cv2.resize(decoded[number - 2 + i], (192, 144),
                               interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(ex["frames"][i], frame)
    assert builder.info.metadata["num_source_frames"] == 20
    assert _tree(labels) == before
    # The registry reads the prepared config back by name, as a training config would.
    import ml_collections

    from vsegjax.data import datasets
    data = ml_collections.ConfigDict(dict(name="user_video", config=cfg.name,
                                          data_dir=str(tmp_path / "tfds")))
    source = datasets.open_split(data, "full")
    assert len(source) == 2 and int(source[1]["frame_index"]) == 12

    # every 2nd frame: frame 5 is not read, so its label has no frame.
    with pytest.raises(vd.BadExample, match="000005.png"):
        vd.plan_user_video(vd.user_video_config(video, labels, num_classes=3, every_nth=2,
                                                max_frames=10))
    (labels / "000005.png").unlink()
    source, found, windows = vd.plan_user_video(vd.user_video_config(
        video, labels, num_classes=3, every_nth=2, max_frames=10))
    assert source.numbers == list(range(0, 20, 2)) and found == {6: labels / "000012.png"}
    assert windows == [fs.Window((4, 5, 6, 7, 8), 2)]

    # No labels: sliding windows, nothing labelled.
    plain = _build("user_video", tmp_path, vd.user_video_config(
        video, max_frames=12, stride=5, resize=(72, 96)))
    examples = _all(plain, "full")
    assert [int(e["frame_index"]) for e in examples] == [2, 7]  # windows 0..4, 5..9
    assert all(not e["has_label"].any() and np.all(e["labels"] == IGNORE) for e in examples)


def test_user_video_from_png_folder(tmp_path):
    frames = tmp_path / "frames"
    names = [f"f{i}.png" for i in range(1, 13)]  # natural order: f1, f2, ..., f10, f11, f12
    _random_frames(frames, names)
    labels = tmp_path / "labels"
    for stem, cls in (("f2", 1), ("f11", 2), ("f12", 3)):
        _write_ids(labels / f"{stem}.png", np.full((20, 30), cls))
    before = [_tree(frames), _tree(labels)]
    cfg = vd.user_video_config(frames, labels, num_classes=4, frames_before=1, frames_after=1)
    examples = _all(_build("user_video", tmp_path, cfg), "full")
    assert [int(e["frame_index"]) for e in examples] == [1, 10, 11]
    assert [int(e["label_index"]) for e in examples] == [1, 1, 2]  # windows 0..2, 9..11 x2
    np.testing.assert_array_equal(examples[1]["has_label"], [False, True, True])
    assert [int(examples[1]["labels"][i, 0, 0]) for i in range(3)] == [IGNORE, 2, 3]
    np.testing.assert_array_equal(examples[0]["frames"][1], fs.read_frame(frames / "f2.png"))
    np.testing.assert_array_equal(examples[2]["frames"][2], fs.read_frame(frames / "f12.png"))
    assert [_tree(frames), _tree(labels)] == before  # the input is only read


# ----------------------------------------------------------------------------- bad input


def _folder(tmp_path, n=6, shape=(20, 30), labelled=("f2",), num_classes=3):
    frames, labels = tmp_path / "frames", tmp_path / "labels"
    _random_frames(frames, [f"f{i}.png" for i in range(n)], shape)
    for stem in labelled:
        _write_ids(labels / f"{stem}.png", np.ones(shape))
    return frames, labels


def _plan_and_read(cfg):
    """All snippets of a config without TFDS (what the builder writes)."""
    source, labels, windows = vd.plan_user_video(cfg)
    encoding = vd.LabelEncoding(num_classes=cfg.num_classes)
    return [fs.make_snippet(source, w, labels,
                            lambda p: encoding.decode_ids(fs.read_label_ids(p), p),
                            cfg.resize, i) for i, w in enumerate(windows)]


@pytest.mark.parametrize("kind", ["png", "jpg", "garbage", "empty"])
def test_unreadable_frame_is_named(tmp_path, kind):
    frames, labels = _folder(tmp_path)
    if kind == "jpg":
        _write_rgb(frames / "f2.jpg", np.zeros((20, 30, 3), np.uint8))
        (frames / "f2.png").unlink()
        bad = frames / "f2.jpg"
    else:
        bad = frames / "f2.png"
    data = bad.read_bytes()
    bad.write_bytes({"png": data[:len(data) // 2], "jpg": data[:len(data) - 40],
                     "garbage": b"not an image at all" * 10, "empty": b""}[kind])
    cfg = vd.user_video_config(frames, labels, num_classes=3, frames_before=1, frames_after=1)
    with pytest.raises(vd.BadExample, match=re.escape(str(bad))):
        _build("user_video", tmp_path, cfg)


def test_undecodable_video_is_named(tmp_path, shared_data):
    garbage = tmp_path / "clip.avi"
    garbage.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(vd.BadExample, match=re.escape(str(garbage))):
        vd.plan_user_video(vd.user_video_config(garbage))
    cut = tmp_path / "cut.avi"
    cut.write_bytes((shared_data / "video" / "vtest.avi").read_bytes()[:3000])
    with pytest.raises(vd.BadExample, match=re.escape(str(cut))):
        _build("user_video", tmp_path, vd.user_video_config(cut))


def test_label_size_mismatch_names_both(tmp_path):
    frames, labels = _folder(tmp_path)
    _write_ids(labels / "f2.png", np.ones((10, 30)))
    cfg = vd.user_video_config(frames, labels, num_classes=3, frames_before=1, frames_after=1)
    with pytest.raises(vd.BadExample) as err:
        _plan_and_read(cfg)
    assert str(labels / "f2.png") in str(err.value) and str(frames / "f2.png") in str(err.value)
    assert "30x10" in str(err.value) and "30x20" in str(err.value)


def test_label_without_frame_is_named(tmp_path):
    frames, labels = _folder(tmp_path, labelled=("f2", "f77"))
    cfg = vd.user_video_config(frames, labels, num_classes=3, frames_before=1, frames_after=1)
    with pytest.raises(vd.BadExample, match=re.escape(str(labels / "f77.png"))):
        _build("user_video", tmp_path, cfg)


def test_label_ids_checked_against_num_classes(tmp_path):
    frames, labels = _folder(tmp_path)
    _write_ids(labels / "f2.png", np.full((20, 30), 7))
    cfg = vd.user_video_config(frames, labels, num_classes=3, frames_before=1, frames_after=1)
    with pytest.raises(ValueError, match=re.escape(str(labels / "f2.png")) + ".*7"):
        _plan_and_read(cfg)


def test_frames_of_different_sizes_are_named(tmp_path):
    frames, labels = _folder(tmp_path)
    _random_frames(frames, ["f3.png"], (22, 30))
    cfg = vd.user_video_config(frames, labels, num_classes=3, frames_before=1, frames_after=1)
    with pytest.raises(vd.BadExample) as err:
        _plan_and_read(cfg)
    assert str(frames / "f1.png") in str(err.value) and str(frames / "f3.png") in str(err.value)


def test_missing_or_empty_folders(tmp_path):
    frames, labels = _folder(tmp_path)
    for cfg, named in [
        (vd.user_video_config(tmp_path / "nope"), tmp_path / "nope"),
        (vd.user_video_config(tmp_path / "nope.mp4"), tmp_path / "nope.mp4"),
        (vd.user_video_config(frames, tmp_path / "nolabels", num_classes=3),
         tmp_path / "nolabels"),
    ]:
        with pytest.raises(FileNotFoundError, match=re.escape(str(named))):
            vd.plan_user_video(cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    for cfg in (vd.user_video_config(empty), vd.user_video_config(frames, empty, num_classes=3)):
        with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
            _build("user_video", tmp_path, cfg)


def test_skip_bad_reports_and_keeps_the_rest(tmp_path):
    frames, labels = _folder(tmp_path, n=12, labelled=("f1", "f5", "f10", "zzz"))
    bad = frames / "f5.png"
    bad.write_bytes(bad.read_bytes()[:100])
    before = [_tree(frames), _tree(labels)]
    messages = []
    cfg = vd.user_video_config(frames, labels, num_classes=3, frames_before=1, frames_after=1,
                               skip_bad=True)
    builder = _build("user_video", tmp_path, cfg, progress=messages.append)
    assert [int(e["frame_index"]) for e in _all(builder, "full")] == [1, 10]
    skipped = builder.skipped["full"]
    assert len(skipped) == 2
    assert {f for e in skipped for f in e["files"]} == {str(bad), str(labels / "zzz.png")}
    assert any("skipped 2 bad example(s)" in m and str(bad) in m for m in messages)
    reread = vd.make_builder("user_video", str(tmp_path / "tfds"), cfg)
    assert reread.info.metadata["skipped"]["full"] == skipped
    assert [_tree(frames), _tree(labels)] == before


def test_interrupted_build_does_not_look_complete(tmp_path, monkeypatch):
    frames, _ = _folder(tmp_path, n=10)
    cfg = vd.user_video_config(frames, frames_before=1, frames_after=1, stride=1)
    real, calls = fs.read_frame, []

    def failing(path):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt("simulated interruption")
        return real(path)

    monkeypatch.setattr(fs, "read_frame", failing)
    with pytest.raises(KeyboardInterrupt):
        _build("user_video", tmp_path, cfg)
    assert not vd.make_builder("user_video", str(tmp_path / "tfds"), cfg).is_prepared()
    monkeypatch.setattr(fs, "read_frame", real)
    builder = _build("user_video", tmp_path, cfg)
    assert builder.is_prepared() and len(builder.as_data_source("full")) == 8


@pytest.mark.parametrize("make,field", [
    (lambda: vd.davis_config(num_frames=0), "num_frames"),
    (lambda: vd.davis_config(stride=2), "stride"),
    (lambda: vd.davis_config(2018), "year"),
    (lambda: vd.davis_config(2016, instances=True), "instances"),
    (lambda: vd.davis_config(resize=(0, 10)), "resize"),
    (lambda: vd.user_video_config("/x", "/y"), "num_classes"),
    (lambda: vd.user_video_config("/x", every_nth=0), "every_nth"),
    (lambda: vd.user_video_config("/x", frames_before=-1), "frames_before"),
])
def test_bad_config_values_are_named(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_config_names_follow_the_options(tmp_path):
    a = vd.user_video_config(tmp_path / "my clip.mp4", resize=(64, 96))
    b = vd.user_video_config(tmp_path / "my clip.mp4", resize=(64, 96), every_nth=2)
    assert a.name != b.name and a.name.startswith("my_clip-t5-64x96-")
    assert a.name == vd.user_video_config(tmp_path / "my clip.mp4", resize=(64, 96),
                                          skip_bad=True).name
    davis = vd.davis_config(num_frames=8)
    assert davis.name.startswith("2016-obj-t8s8-480p-") and davis.name == vd.davis_config(
        "2016", num_frames=8, stride=8).name != vd.davis_config(num_frames=8, stride=4).name



def _script(*args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# 7e. user_video --name=../../x wrote the dataset outside --data_dir; the unknown-field
# error of vsegjax.main was garbled.
def test_user_video_name_is_a_folder_name_and_unknown_fields_read_plainly(clip, tmp_path):
    data_dir = tmp_path / "tfds"
    for name in ("../../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="a dataset config name is letters, digits"):
            video_datasets.user_video_config(clip / "frames", name=name)
    assert video_datasets.user_video_config(clip / "frames", name="clip-1.v2").name == "clip-1.v2"
    proc = _script("data_prep/user_video.py", f"--frames={clip / 'frames'}",
                   f"--data_dir={data_dir}", "--name=../../x")
    assert proc.returncode == 1 and "--name='../../x'" in proc.stderr
    assert not data_dir.exists() and not (tmp_path.parent / "x").exists()
    proc = _script("-m", "vsegjax.main", "--config=configs/static_synthetic.py",
                   f"--workdir={tmp_path / 'run'}", "--config.train.num_stepz=3")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1
    assert last == ("error: unknown config field 'num_stepz' (--config.train.num_stepz). "
                    'Did you mean "num_steps" instead of "num_stepz"? See the config file '
                    "for the fields it defines.")


# 9. data_prep/user_video.py checked its input only after TFDS had started preparing,
# leaving downloads/extracted behind in the data dir.
def test_user_video_checks_its_input_before_touching_the_data_dir(clip, tmp_path):
    data_dir = tmp_path / "tfds"
    proc = _script("data_prep/user_video.py", f"--frames={tmp_path / 'missing'}",
                   f"--data_dir={data_dir}")
    assert proc.returncode == 1 and "frames not found" in proc.stderr
    (clip / "labels" / "00099.png").write_bytes((clip / "labels" / "00000.png").read_bytes())
    proc = _script("data_prep/user_video.py", f"--frames={clip / 'frames'}",
                   f"--labels={clip / 'labels'}", f"--num_classes={C}", f"--data_dir={data_dir}")
    assert proc.returncode == 1 and "no frame '00099'" in proc.stderr
    assert not data_dir.exists()
