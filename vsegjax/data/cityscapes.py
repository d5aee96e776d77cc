"""TFDS builder ``cityscapes_sequences``: Cityscapes 30-frame snippets around each label.

    python data_prep/cityscapes.py --manual_dir=~/data/cityscapes --data_dir=~/tensorflow_datasets

The manual folder holds the official downloads unzipped side by side::

    leftImg8bit_sequence/{train,val,test}/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    gtCoarse/{train,train_extra,val}/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png
    leftImg8bit/demoVideo/stuttgart_0{0,1,2}/stuttgart_0X_000000_<frame:06d>_leftImg8bit.png

Configs (``mode``):

* ``default`` (fine): one snippet per ``gtFine`` label, ``frames_before`` = 19 and
  ``frames_after`` = 10 sequence frames around the labelled one (the official 30-frame
  snippet: the label is on its 20th frame). ``t5_512x1024``: 4 frames before, none after,
  resized to 512x1024. ``custom_config`` makes any window / size.
* ``coarse``: the same snippets around ``gtCoarse`` labels (``train_extra`` is built only
  if its sequence frames are present).
* ``demo_video``: windows of ``demo_frames`` consecutive frames (every ``demo_stride``
  frames) of the three ``demoVideo`` sequences, split ``demo``; no labels (all 255,
  ``has_label`` False, ``label_index`` = the last frame).

Labels: the 34 Cityscapes label ids (and 255, i.e. -1 license plate stored as uint8) map to
the 19 train ids (``CLASS_NAMES``), everything else of the 34 to 255; any other value (e.g.
an instanceIds or color PNG given by mistake) is an error naming the file. The ``test``
labels are withheld by Cityscapes (placeholders), so test snippets carry labels 255 and
``has_label`` False. ``CATEGORIES`` maps train ids to the 7 categories for category IoU.

Splits: every split whose label folder and sequence folder are both present (TFDS names
``train``, ``validation``, ``test``, ``train_extra``, ``demo``). Record ``i`` of a split is
the ``i``-th good label file in sorted (city, sequence, frame) order; ``snippet_id`` is its
position and ``info.metadata["names"][split][snippet_id]`` its name. Bad entries raise
``BadExample`` naming the files, or with ``skip_bad`` are skipped and reported at the end
of the split. TFDS writes into ``*.incomplete*`` folders, so an interrupted build never
looks complete.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from vsegjax.data import labels as labels_lib, snippet_builder
from vsegjax.data.snippet_builder import BadExample
from vsegjax.data.labels import (CITYSCAPES_CATEGORIES, CITYSCAPES_CATEGORY_NAMES,
                                 CITYSCAPES_CLASSES, CITYSCAPES_TO_TRAIN)

IGNORE_LABEL = 255

CLASS_NAMES = CITYSCAPES_CLASSES
NUM_CLASSES = len(CLASS_NAMES)
CATEGORIES = CITYSCAPES_CATEGORIES  # train id -> category id
CATEGORY_NAMES = CITYSCAPES_CATEGORY_NAMES
NUM_LABEL_IDS = 34  # Cityscapes label ids 0..33
# Every label id -> train id (unlisted ids -> 255); 255 is -1 (license plate) as uint8.
LABEL_IDS = {**{i: CITYSCAPES_TO_TRAIN.get(i, IGNORE_LABEL) for i in range(NUM_LABEL_IDS)},
             255: IGNORE_LABEL}
LABELS = labels_lib.LabelEncoding(ids=LABEL_IDS)

FULL_SIZE = (1024, 2048)  # (height, width)
MODES = ("fine", "coarse", "demo_video")
SNIPPET_LENGTH = 30  # frames per official sequence snippet
LABELLED_FRAME = 19  # the gtFine frame is frame 19 (0-based) of its snippet
SEQUENCE_DIR = "leftImg8bit_sequence"
DEMO_DIR = ("leftImg8bit", "demoVideo")
# mode -> (label folder, label file suffix, {TFDS split: folder name})
LABEL_FOLDERS = {
    "fine": ("gtFine", "_gtFine_labelIds.png",
             {"train": "train", "validation": "val", "test": "test"}),
    "coarse": ("gtCoarse", "_gtCoarse_labelIds.png",
               {"train": "train", "train_extra": "train_extra", "validation": "val"}),
}
UNLABELLED_SPLITS = ("test",)  # Cityscapes withholds these labels
DEMO_SPLIT = "demo"

EXPECTED_LAYOUT = (
    "expected the official Cityscapes downloads unzipped into one folder: "
    "leftImg8bit_sequence/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png "
    "(leftImg8bit_sequence_trainvaltest.zip) with gtFine/{train,val,test}/<city>/"
    "<city>_<seq>_<frame>_gtFine_labelIds.png (gtFine_trainvaltest.zip), gtCoarse/"
    "{train,train_extra,val}/... for the coarse config, and leftImg8bit/demoVideo/"
    "stuttgart_0{0,1,2}/ (leftImg8bit_demoVideo.zip) for the demo_video config")

_NAME = re.compile(r"^(.+)_(\d{6})_(\d{6})_[A-Za-z0-9]+")


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class CityscapesConfig(tfds.core.BuilderConfig):
    """Builder options.

    mode: "fine" (gtFine), "coarse" (gtCoarse) or "demo_video" (unlabelled demoVideo).
    frames_before, frames_after: sequence frames on each side of the labelled one (fine,
      coarse); 19 and 10 give the official 30-frame snippet.
    demo_frames, demo_stride: window length and step for demo_video (stride 0 = length:
      non-overlapping windows).
    resize: (height, width) to resize frames and labels to, or None to keep ``image_size``.
    image_size: (height, width) the frames must have when ``resize`` is None.
    skip_bad: skip bad entries (reported at the end) instead of failing.
    """

    mode: str = "fine"
    frames_before: int = LABELLED_FRAME
    frames_after: int = SNIPPET_LENGTH - 1 - LABELLED_FRAME
    demo_frames: int = SNIPPET_LENGTH
    demo_stride: int = 0
    resize: tuple[int, int] | None = None
    image_size: tuple[int, int] = FULL_SIZE
    skip_bad: bool = False

    @property
    def num_frames(self) -> int:
        if self.mode == "demo_video":
            return self.demo_frames
        return self.frames_before + 1 + self.frames_after

    @property
    def label_index(self) -> int:
        return self.demo_frames - 1 if self.mode == "demo_video" else self.frames_before

    @property
    def stride(self) -> int:
        return self.demo_stride or self.demo_frames

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(self.resize) if self.resize is not None else tuple(self.image_size)


def check_config(cfg: CityscapesConfig) -> None:
    """Raises ValueError naming the field when ``cfg`` is inconsistent."""
    where = f"Cityscapes config {cfg.name!r}"
    if cfg.mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}; got {cfg.mode!r}")
    for field, low in (("frames_before", 0), ("frames_after", 0), ("demo_frames", 1),
                       ("demo_stride", 0)):
        value = getattr(cfg, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{where}: {field} must be an integer >= {low}; got {value!r}")
    for field in ("resize", "image_size"):
        value = getattr(cfg, field)
        if value is None and field == "resize":
            continue
        if len(tuple(value)) != 2 or not all(isinstance(v, int) and v >= 8 for v in value):
            raise ValueError(f"{where}: {field} must be (height, width) integers >= 8; "
                             f"got {value!r}")


def config_name(mode: str = "fine", frames_before: int = LABELLED_FRAME,
                frames_after: int = SNIPPET_LENGTH - 1 - LABELLED_FRAME,
                size: Sequence[int] = FULL_SIZE, demo_frames: int = SNIPPET_LENGTH,
                demo_stride: int = 0) -> str:
    """A directory-safe name that changes whenever the stored content would."""
    h, w = size
    if mode == "demo_video":
        return f"demo_t{demo_frames}-s{demo_stride or demo_frames}_{h}x{w}"
    name = f"t{frames_before}-{frames_after}_{h}x{w}"
    return f"coarse_{name}" if mode == "coarse" else name


def _named(name: str, description: str, **fields) -> CityscapesConfig:
    cfg = CityscapesConfig(name=name, description=description, **fields)
    check_config(cfg)
    return cfg


DEFAULT = _named("default", "gtFine, 19+1+10 frames (official 30-frame snippet), 2048x1024")
T5_HALF = _named("t5_512x1024", "gtFine, 4+1+0 frames, 1024x512", frames_before=4,
                 frames_after=0, resize=(512, 1024))
COARSE = _named("coarse", "gtCoarse, 19+1+10 frames, 2048x1024", mode="coarse")
DEMO_VIDEO = _named("demo_video", "demoVideo, windows of 30 frames, no labels, 2048x1024",
                    mode="demo_video")
BUILDER_CONFIGS = (DEFAULT, T5_HALF, COARSE, DEMO_VIDEO)


def _key(cfg: CityscapesConfig) -> tuple:
    if cfg.mode == "demo_video":
        return (cfg.mode, cfg.demo_frames, cfg.stride, cfg.out_size)
    return (cfg.mode, cfg.frames_before, cfg.frames_after, cfg.out_size)


def custom_config(mode: str = "fine", frames_before: int = LABELLED_FRAME,
                  frames_after: int = SNIPPET_LENGTH - 1 - LABELLED_FRAME,
                  resize: Sequence[int] | None = None, demo_frames: int = SNIPPET_LENGTH,
                  demo_stride: int = 0, image_size: Sequence[int] = FULL_SIZE
                  ) -> CityscapesConfig:
    """A config for any options; its name encodes everything that changes the records.

    Options equal to a predefined config give that config (TFDS refuses a second config
    of the same name). Skipping bad entries is a build option: ``build(..., skip_bad=True)``.
    """
    resize = None if resize is None else tuple(int(v) for v in resize)
    image_size = tuple(int(v) for v in image_size)
    size = resize if resize is not None else image_size
    cfg = CityscapesConfig(
        name=config_name(mode, frames_before, frames_after, size, demo_frames, demo_stride),
        description=(f"Cityscapes {mode}, {size[1]}x{size[0]}, " + (
            f"windows of {demo_frames} frames every {demo_stride or demo_frames}"
            if mode == "demo_video" else f"{frames_before}+1+{frames_after} frames")),
        mode=mode, frames_before=frames_before, frames_after=frames_after,
        demo_frames=demo_frames, demo_stride=demo_stride, resize=resize,
        image_size=image_size)
    check_config(cfg)
    for known in BUILDER_CONFIGS:
        if _key(known) == _key(cfg):
            return known
    return cfg


# ---------------------------------------------------------------------------------------
# Pure helpers: names, lists, files
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Entry:
    """One snippet: its index in the split and the frame files (label None = unlabelled)."""

    index: int
    name: str                       # e.g. "aachen_000000_000019" or "stuttgart_00/000029"
    frames: tuple[pathlib.Path, ...]
    label: pathlib.Path | None
    frame_number: int               # of the frame at label_index


def parse_name(filename: str) -> tuple[str, int, int]:
    """``aachen_000012_000019_gtFine_labelIds.png`` -> ("aachen", 12, 19).

    The "city" is everything before the two 6-digit numbers (``stuttgart_00`` for demoVideo).
    """
    match = _NAME.match(filename)
    if not match:
        raise ValueError(f"{filename}: not a Cityscapes file name "
                         f"(<city>_<seq:06d>_<frame:06d>_<kind>.png)")
    return match.group(1), int(match.group(2)), int(match.group(3))


def frame_file(folder: pathlib.Path, city: str, seq: int, frame: int) -> pathlib.Path:
    return folder / f"{city}_{seq:06d}_{frame:06d}_leftImg8bit.png"


def present_splits(root: str | os.PathLike, mode: str) -> tuple[dict, list[str]]:
    """({TFDS split: (sequence folder, label folder or None)}, notes on half-present splits)."""
    root = pathlib.Path(root)
    if mode == "demo_video":
        demo = root.joinpath(*DEMO_DIR)
        return ({DEMO_SPLIT: (demo, None)} if demo.is_dir() else {}), []
    label_root, _, folders = LABEL_FOLDERS[mode]
    splits, notes = {}, []
    for split, folder in folders.items():
        seq, lab = root / SEQUENCE_DIR / folder, root / label_root / folder
        if seq.is_dir() and lab.is_dir():
            splits[split] = (seq, lab)
        elif seq.is_dir() or lab.is_dir():
            have, lack = (seq, lab) if seq.is_dir() else (lab, seq)
            notes.append(f"{split}: {have} is present but {lack} is not; split not built")
    return splits, notes


def list_split(cfg: CityscapesConfig, split: str, seq_dir: pathlib.Path,
               label_dir: pathlib.Path | None) -> list[Entry]:
    """The split's snippets in sorted (city, sequence, frame) order."""
    if cfg.mode == "demo_video":
        return list_demo(seq_dir, cfg.demo_frames, cfg.stride)
    suffix = LABEL_FOLDERS[cfg.mode][1]
    files = sorted(p for p in label_dir.glob(f"*/*{suffix}") if p.is_file())
    if not files:
        raise FileNotFoundError(f"Cityscapes {split}: no *{suffix} files in {label_dir}/"
                                f"<city>/; {EXPECTED_LAYOUT}")
    entries = []
    for path in files:
        city, seq, number = parse_name(path.name)
        folder = seq_dir / path.parent.name
        offsets = range(-cfg.frames_before, cfg.frames_after + 1)
        frames = tuple(frame_file(folder, city, seq, number + o) for o in offsets)
        entries.append(Entry(index=len(entries), name=f"{city}_{seq:06d}_{number:06d}",
                             frames=frames,
                             label=None if split in UNLABELLED_SPLITS else path,
                             frame_number=number))
    return entries


def list_demo(demo_dir: pathlib.Path, length: int, stride: int) -> list[Entry]:
    """Windows of ``length`` consecutive frames every ``stride`` of each demo sequence."""
    sequences = sorted(p for p in demo_dir.iterdir() if p.is_dir())
    entries = []
    for folder in sequences:
        files = sorted(folder.glob("*_leftImg8bit.png"))
        if not files:
            continue
        city, seq, first = parse_name(files[0].name)
        last = parse_name(files[-1].name)[2]
        for start in range(first, last - length + 2, stride):
            frames = tuple(frame_file(folder, city, seq, start + i) for i in range(length))
            entries.append(Entry(index=len(entries), name=f"{folder.name}/{start:06d}",
                                 frames=frames, label=None, frame_number=start + length - 1))
    if not entries:
        raise FileNotFoundError(f"Cityscapes demoVideo: no sequence in {demo_dir} has "
                                f"{length} frames (*_leftImg8bit.png in stuttgart_0X/)")
    return entries


def read_label(path: pathlib.Path) -> np.ndarray:
    """uint8 [H, W] train ids (255 = ignore); BadExample naming the file when missing,
    undecodable or not a labelIds image."""
    if not path.is_file():
        raise BadExample(f"{path}: label file is missing")
    try:
        return LABELS.decode(path)
    except labels_lib.LabelError as e:
        raise BadExample(f"{e} (expected a *_labelIds.png with Cityscapes ids 0..33)") from e


def load_example(cfg: CityscapesConfig, entry: Entry) -> dict[str, np.ndarray]:
    """The snippet ``entry`` in the ``features.py`` format; BadExample naming the files."""
    out = cfg.out_size
    ref = entry.frames[cfg.label_index]
    label = read_label(entry.label) if entry.label is not None else None
    frames, size = [], None
    for path in entry.frames:
        try:
            frame = snippet_builder.read_frame(path, "sequence frame")
        except BadExample as e:
            if cfg.mode != "demo_video" and not path.is_file() and (
                    cfg.frames_before > LABELLED_FRAME
                    or cfg.frames_after > SNIPPET_LENGTH - 1 - LABELLED_FRAME):
                raise BadExample(f"{e} (frames_before={cfg.frames_before}, frames_after="
                                 f"{cfg.frames_after} reach beyond the official snippet of "
                                 f"{LABELLED_FRAME} frames before and "
                                 f"{SNIPPET_LENGTH - 1 - LABELLED_FRAME} after)") from e
            raise
        if size is None:
            size = frame.shape[:2]
            if cfg.resize is None and size != tuple(cfg.image_size):
                raise BadExample(f"{path}: frame is {size[1]}x{size[0]} but the config "
                                 f"expects {cfg.image_size[1]}x{cfg.image_size[0]} (width x "
                                 f"height); set resize=(height, width) to resize frames")
        elif frame.shape[:2] != size:
            raise BadExample(f"size mismatch: frame {path} is {frame.shape[1]}x"
                             f"{frame.shape[0]} but {entry.frames[0]} of the same snippet is "
                             f"{size[1]}x{size[0]} (width x height)")
        frames.append(snippet_builder.resize(frame, out, nearest=False))
    if label is not None and label.shape != size:
        raise BadExample(f"size mismatch: frame {ref} is {size[1]}x{size[0]} but label "
                         f"{entry.label} is {label.shape[1]}x{label.shape[0]} "
                         f"(width x height)")
    t = len(frames)
    labels = np.full((t, *out), IGNORE_LABEL, np.uint8)
    has_label = np.zeros((t,), bool)
    if label is not None:
        labels[cfg.label_index] = snippet_builder.resize(label, out, nearest=True)
        has_label[cfg.label_index] = True
    return {
        "frames": np.stack(frames),
        "labels": labels,
        "has_label": has_label,
        "label_index": np.int32(cfg.label_index),
        "snippet_id": np.int64(entry.index),
        "frame_index": np.int64(entry.frame_number),
    }


# ---------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------

_IN_FLIGHT_BYTES = 2 << 30  # cap on decoded snippets held by the reading threads


class CityscapesSequences(snippet_builder.SnippetBuilder):
    """Cityscapes sequence snippets around gtFine / gtCoarse labels, or demoVideo windows."""

    name = "cityscapes_sequences"
    BUILDER_CONFIGS = list(BUILDER_CONFIGS)
    DEFAULT_CONFIG_NAME = "default"
    EXPECTED = EXPECTED_LAYOUT
    MANUAL_DOWNLOAD_INSTRUCTIONS = EXPECTED_LAYOUT + (
        ". Pass that folder as the manual dir (data_prep/cityscapes.py --manual_dir=...).")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        check_config(self.builder_config)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        h, w = cfg.out_size
        what = ("demoVideo windows without labels" if cfg.mode == "demo_video" else
                f"{cfg.frames_before}+1+{cfg.frames_after} frames around each "
                f"{LABEL_FOLDERS[cfg.mode][0]} label")
        return self.dataset_info_from_configs(
            description=(f"Cityscapes sequences, 19 train classes {list(CLASS_NAMES)} "
                         f"(255 = ignore), {w}x{h}, {what}."),
            features=snippet_builder.snippet_features(cfg.num_frames, (h, w)),
            supervised_keys=None,
            homepage="https://www.cityscapes-dataset.com/",
            citation=("Cordts et al. The Cityscapes Dataset for Semantic Urban Scene "
                      "Understanding. CVPR 2016."),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        # TFDS's message for a missing manual dir already holds the layout.
        root = self._manual_root(dl_manager)
        splits, notes = present_splits(root, cfg.mode)
        for note in notes:
            logging.warning("Cityscapes: %s", note)
        if not splits:
            found = sorted(p.name for p in root.iterdir())[:20]
            raise FileNotFoundError(
                f"Cityscapes manual dir {root} has no complete split for config "
                f"{cfg.name!r} (mode {cfg.mode}; found {found}"
                f"{'; ' + '; '.join(notes) if notes else ''}); {EXPECTED_LAYOUT}")
        lists = {split: list_split(cfg, split, seq, lab) for split, (seq, lab) in
                 splits.items()}
        self.info.metadata["names"] = {s: [e.name for e in v] for s, v in lists.items()}
        return {split: self._generate_examples(split, entries)
                for split, entries in lists.items()}

    def _generate_examples(self, split: str, entries: list[Entry]):
        cfg = self.builder_config
        h, w = cfg.out_size
        per_example = cfg.num_frames * h * w * 4
        workers = max(1, self.num_workers)
        window = max(workers, min(4 * workers, _IN_FLIGHT_BYTES // per_example))
        for entry, example in self._write(split, entries, lambda e: _load_for_builder(cfg, e),
                                          what=lambda e: e.name, workers=workers,
                                          window=window):
            yield entry.index, example


def _load_for_builder(cfg, entry):
    # Looked up at call time so tests can patch ``load_example``.
    return load_example(cfg, entry)


def make_builder(data_dir: str, config: str | CityscapesConfig = "default",
                 **kwargs) -> CityscapesSequences:
    """The builder for a predefined config name or a ``CityscapesConfig`` (``custom_config``)."""
    return CityscapesSequences(config=config, data_dir=os.path.expanduser(data_dir), **kwargs)


def build(data_dir: str, manual_dir: str | os.PathLike,
          config: str | CityscapesConfig = "default", skip_bad: bool | None = None,
          num_workers: int | None = None) -> CityscapesSequences:
    """Builds every split whose folders are in ``manual_dir`` (if not built yet)."""
    builder = make_builder(data_dir, config, skip_bad=skip_bad, num_workers=num_workers)
    return snippet_builder.prepare(builder, manual_dir)
