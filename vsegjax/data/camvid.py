"""TFDS builder ``camvid``: the 11-class CamVid (480x360, as distributed with SegNet).

    python data_prep/camvid.py --manual_dir=~/data/CamVid --data_dir=~/tensorflow_datasets

The manual folder holds ``train/ trainannot/ val/ valannot/ test/ testannot/`` (image and
label PNGs of the same name) and optionally ``train.txt val.txt test.txt`` whose lines are
``<image path> <label path>`` (SegNet's ``/SegNet/CamVid/`` prefix is stripped). Every split
whose image folder is present is built: ``train``, ``validation`` (from ``val/``), ``test``.

Labels are ids 0..10 (``CLASS_NAMES``); raw id 11 (Unlabelled) becomes 255 = ignore, any
other id is an error naming the file. Colour-encoded labels (``CAMVID_COLORS``) are read
with ``label_format="colors"``.

Each example is a snippet in the ``features.py`` format. Without 30 fps frames it has one
frame. Given ``sequence_dir`` (the user's frames of the source drives, named like the
labelled files: ``0016E5_08190.png``, ``0006R0_f00960.png``, flat or in one folder per
drive) a snippet holds ``frames_before`` + 1 + ``frames_after`` consecutive frames around
the labelled one; other frames carry labels 255 and ``has_label`` False (unless
``label_all_frames`` fills in frames of the same split that are labelled too).

Record ``i`` of a split is the ``i``-th good entry of its list; ``snippet_id`` is the
entry's position in the list and ``info.metadata["names"][split][snippet_id]`` its file
name. Bad entries (unreadable, missing or mismatched files) raise ``BadExample`` naming
the files, or with ``skip_bad`` are skipped and reported at the end of the split.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from vsegjax.data import labels as labels_lib, snippet_builder
from vsegjax.data.snippet_builder import BadExample, read_frame

IGNORE_LABEL = 255

CLASS_NAMES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
               "Car", "Pedestrian", "Bicyclist")
NUM_CLASSES = len(CLASS_NAMES)
RAW_UNLABELLED = 11
# Raw label id -> class id: 0..10 stay, 11 (Unlabelled) is ignored.
LABEL_IDS = {**{i: i for i in range(NUM_CLASSES)}, RAW_UNLABELLED: IGNORE_LABEL}
# RGB -> class id for colour-encoded label images; void (0, 0, 0) is ignored.
CAMVID_COLORS = {
    (128, 128, 128): 0, (128, 0, 0): 1, (192, 192, 128): 2, (128, 64, 128): 3,
    (60, 40, 222): 4, (128, 128, 0): 5, (192, 128, 128): 6, (64, 64, 128): 7,
    (64, 0, 128): 8, (64, 64, 0): 9, (0, 128, 192): 10, (0, 0, 0): IGNORE_LABEL,
}
LABEL_FORMATS = ("ids", "colors")

SEGNET_PREFIX = "/SegNet/CamVid/"
# TFDS split -> (image folder, label folder, list file) in the manual dir.
SPLIT_FOLDERS = {
    "train": ("train", "trainannot", "train.txt"),
    "validation": ("val", "valannot", "val.txt"),
    "test": ("test", "testannot", "test.txt"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
FULL_SIZE = (360, 480)  # (height, width) of the SegNet version
CITATION = ("Brostow, Fauqueur, Cipolla. Semantic object classes in video: a high-definition "
            "ground truth database. Pattern Recognition Letters 30(2), 2009.")

EXPECTED_LAYOUT = (
    "expected CamVid as distributed with SegNet: folders train/ + trainannot/, val/ + "
    "valannot/ and/or test/ + testannot/ (image and label PNGs of the same name, labels "
    "ids 0..10, 11 = Unlabelled), optionally with train.txt/val.txt/test.txt listing "
    "'<image> <label>' per line")


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class CamVidConfig(tfds.core.BuilderConfig):
    """Builder options.

    frames_before, frames_after: 30 fps frames on each side of the labelled one (need
      ``sequence_dir``).
    sequence_dir: the folder of 30 fps frames of the source drives (a data location, not
      part of the config name).
    resize: (height, width) to resize every frame and label to, or None to keep
      ``image_size``.
    image_size: (height, width) the frames must have when ``resize`` is None.
    label_format: "ids" (single-channel id PNGs) or "colors" (RGB, ``CAMVID_COLORS``).
    label_all_frames: also fill in labels of other frames of the snippet that are
      labelled entries of the same split (e.g. every 2nd frame of ``val``).
    skip_bad: skip bad entries (reported at the end) instead of failing.
    """

    frames_before: int = 0
    frames_after: int = 0
    sequence_dir: str | None = None
    resize: tuple[int, int] | None = None
    image_size: tuple[int, int] = FULL_SIZE
    label_format: str = "ids"
    label_all_frames: bool = False
    skip_bad: bool = False

    @property
    def num_frames(self) -> int:
        return self.frames_before + 1 + self.frames_after

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(self.resize) if self.resize is not None else tuple(self.image_size)


def check_config(cfg: CamVidConfig) -> None:
    """Raises ValueError naming the field when ``cfg`` is inconsistent."""
    where = f"CamVid config {cfg.name!r}"
    for field in ("frames_before", "frames_after"):
        value = getattr(cfg, field)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: {field} must be an integer >= 0; got {value!r}")
    if cfg.num_frames > 1 and not cfg.sequence_dir:
        raise ValueError(f"{where}: frames_before={cfg.frames_before}, frames_after="
                         f"{cfg.frames_after} need sequence_dir (the folder of 30 fps frames)")
    if cfg.sequence_dir and cfg.num_frames == 1:
        raise ValueError(f"{where}: sequence_dir is set but frames_before and frames_after "
                         f"are 0; set how many 30 fps frames to take around each label")
    for field in ("resize", "image_size"):
        value = getattr(cfg, field)
        if value is None and field == "resize":
            continue
        if (len(tuple(value)) != 2 or not all(isinstance(v, int) and v >= 8 for v in value)):
            raise ValueError(f"{where}: {field} must be (height, width) integers >= 8; "
                             f"got {value!r}")
    if cfg.label_format not in LABEL_FORMATS:
        raise ValueError(f"{where}: label_format must be one of {LABEL_FORMATS}; "
                         f"got {cfg.label_format!r}")
    if cfg.label_all_frames and cfg.num_frames == 1:
        raise ValueError(f"{where}: label_all_frames needs frames_before/frames_after")


def config_name(frames_before: int = 0, frames_after: int = 0,
                size: tuple[int, int] = FULL_SIZE, label_format: str = "ids",
                label_all_frames: bool = False) -> str:
    """A directory-safe name that changes whenever the stored content would."""
    if (frames_before, frames_after, tuple(size), label_format, label_all_frames) == (
            0, 0, FULL_SIZE, "ids", False):
        return "default"
    name = f"t{frames_before}-{frames_after}_{size[0]}x{size[1]}"
    if label_format != "ids":
        name += f"_{label_format}"
    if label_all_frames:
        name += "_alllabels"
    return name


DEFAULT = CamVidConfig(name="default", description="480x360, one labelled frame per example")


def custom_config(frames_before: int = 0, frames_after: int = 0,
                  sequence_dir: str | os.PathLike | None = None,
                  resize: Sequence[int] | None = None, label_format: str = "ids",
                  label_all_frames: bool = False,
                  image_size: Sequence[int] = FULL_SIZE) -> CamVidConfig:
    """A config for any options; its name encodes everything that changes the records.

    The default options give ``DEFAULT`` itself (TFDS refuses a second config named
    "default"). Skipping bad entries is a build option: ``build(..., skip_bad=True)``.
    """
    resize = None if resize is None else tuple(int(v) for v in resize)
    image_size = tuple(int(v) for v in image_size)
    size = resize if resize is not None else image_size
    seq = os.path.expanduser(os.fspath(sequence_dir)) if sequence_dir else None
    cfg = CamVidConfig(
        name=config_name(frames_before, frames_after, size, label_format, label_all_frames),
        description=(f"{size[1]}x{size[0]}, {frames_before}+1+{frames_after} frames per "
                     f"snippet, labels as {label_format}"),
        frames_before=frames_before, frames_after=frames_after, sequence_dir=seq,
        resize=resize, image_size=image_size, label_format=label_format,
        label_all_frames=label_all_frames)
    check_config(cfg)
    return DEFAULT if cfg.name == DEFAULT.name else cfg


# ---------------------------------------------------------------------------------------
# Pure helpers: lists, names, files
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Entry:
    """One labelled frame of a split: its position in the list and its two files."""

    index: int
    image: pathlib.Path
    label: pathlib.Path
    where: str = ""  # e.g. "train.txt:12", for error messages

    @property
    def name(self) -> str:
        return self.image.stem


def strip_segnet_prefix(path: str) -> str:
    """``/SegNet/CamVid/train/x.png`` -> ``train/x.png``; other paths unchanged."""
    path = path.replace("\\", "/")
    return path[len(SEGNET_PREFIX):] if path.startswith(SEGNET_PREFIX) else path


def parse_split_list(text: str, where: str = "<list>") -> list[tuple[str, str | None]]:
    """Parses a split list: one ``<image> [<label>]`` per line, blank and ``#`` lines skipped.

    Returns (image, label or None) paths with SegNet's ``/SegNet/CamVid/`` prefix removed.
    Raises ValueError naming ``where`` and the line for any other shape of line.
    """
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(f"{where}:{number}: expected '<image> <label>', got {len(parts)} "
                             f"fields: {line!r}")
        image = strip_segnet_prefix(parts[0])
        label = strip_segnet_prefix(parts[1]) if len(parts) == 2 else None
        pairs.append((image, label))
    return pairs


def resolve_listed_path(root: pathlib.Path, path: str) -> pathlib.Path:
    """A list path relative to ``root``; an absolute path that does not exist (a list
    written on another machine) is taken as ``<folder>/<file>`` under ``root``."""
    p = pathlib.PurePosixPath(path)
    if p.is_absolute():
        if pathlib.Path(path).exists():
            return pathlib.Path(path)
        return root.joinpath(*p.parts[-2:])
    return root / pathlib.Path(path)


def present_splits(root: str | os.PathLike) -> list[str]:
    """The splits whose image folder is in ``root`` (TFDS names: train, validation, test)."""
    root = pathlib.Path(root)
    return [split for split, (images, _, _) in SPLIT_FOLDERS.items()
            if (root / images).is_dir()]


def _is_image(path: pathlib.Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES \
        and not path.name.startswith(".")


def list_split(root: str | os.PathLike, split: str) -> list[Entry]:
    """The entries of ``split``: from its list file when present, else every image in its
    image folder (sorted) paired with the label of the same name.

    Raises FileNotFoundError when the label folder is missing, ValueError when the split
    has no entries (an empty folder or list). Missing files are left to ``load_example``.
    """
    root = pathlib.Path(root)
    image_dir, label_dir, list_name = SPLIT_FOLDERS[split]
    if not (root / label_dir).is_dir():
        raise FileNotFoundError(f"CamVid {split}: label folder {root / label_dir} is missing "
                                f"(images are in {root / image_dir}); {EXPECTED_LAYOUT}")
    list_file = root / list_name
    if list_file.is_file():
        pairs = parse_split_list(list_file.read_text(), str(list_file))
        entries = []
        for i, (image, label) in enumerate(pairs):
            image_path = resolve_listed_path(root, image)
            label_path = (resolve_listed_path(root, label) if label is not None
                          else root / label_dir / image_path.name)
            entries.append(Entry(i, image_path, label_path, f"{list_file}, entry {i + 1}"))
        if not entries:
            raise ValueError(f"CamVid {split}: {list_file} lists no frames")
        return entries
    images = sorted(p for p in (root / image_dir).iterdir() if _is_image(p))
    if not images:
        raise ValueError(f"CamVid {split}: no images in {root / image_dir} (and no "
                         f"{list_name}); {EXPECTED_LAYOUT}")
    return [Entry(i, p, root / label_dir / p.name, str(root / image_dir))
            for i, p in enumerate(images)]


_FRAME_NAME = re.compile(r"^(.*?)(\d+)$")


def parse_frame_name(stem: str) -> tuple[str, int, int]:
    """``0016E5_08190`` -> ("0016E5_", 8190, 5); ``0006R0_f00960`` -> ("0006R0_f", 960, 5).

    Returns (prefix, frame number, digits); raises ValueError if the name does not end in
    a frame number.
    """
    match = _FRAME_NAME.match(stem)
    if not match:
        raise ValueError(f"frame name {stem!r} does not end in a frame number "
                         f"(expected e.g. 0016E5_08190)")
    return match.group(1), int(match.group(2)), len(match.group(2))


def frame_stem(prefix: str, number: int, digits: int) -> str:
    return f"{prefix}{number:0{digits}d}"


def drive_of(stem: str) -> str:
    """The drive a frame belongs to: ``0006R0_f00960`` -> ``0006R0``."""
    return stem.split("_")[0]


def find_sequence_frame(sequence_dir: str | os.PathLike, stem: str) -> pathlib.Path | None:
    """The 30 fps frame ``stem`` in ``sequence_dir`` or ``sequence_dir/<drive>/``, any image
    suffix; None when absent."""
    base = pathlib.Path(sequence_dir)
    for folder in (base, base / drive_of(stem)):
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def read_label(path: pathlib.Path, label_format: str = "ids") -> np.ndarray:
    """uint8 [H, W] class ids (255 = ignore); BadExample naming the file when missing,
    undecodable or holding ids/colours that are not CamVid's."""
    if not path.is_file():
        raise BadExample(f"{path}: label file is missing")
    encoding = (labels_lib.LabelEncoding(colors=CAMVID_COLORS) if label_format == "colors"
                else labels_lib.LabelEncoding(ids=LABEL_IDS))
    try:
        return encoding.decode(path)
    except labels_lib.LabelError as e:
        hint = (" (colour label images need label_format='colors')"
                if "single-channel" in str(e) else "")
        raise BadExample(f"{e}{hint}") from e


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] * b[1] - a[1] * b[0]) <= 0.01 * a[0] * b[1]


def load_labelled(entry: Entry, label_format: str) -> tuple[np.ndarray, np.ndarray]:
    """The entry's (frame, label), checked to have the same size."""
    if not entry.image.is_file():
        raise BadExample(f"{entry.image}: image file is missing (listed in {entry.where})")
    if not entry.label.is_file():
        raise BadExample(f"{entry.label}: label file is missing for image {entry.image} "
                         f"(listed in {entry.where})")
    frame = read_frame(entry.image)
    label = read_label(entry.label, label_format)
    if frame.shape[:2] != label.shape:
        raise BadExample(f"size mismatch: image {entry.image} is {frame.shape[1]}x"
                         f"{frame.shape[0]} but label {entry.label} is {label.shape[1]}x"
                         f"{label.shape[0]} (width x height)")
    return frame, label


def load_example(cfg: CamVidConfig, entry: Entry,
                 labelled: dict[str, Entry] | None = None) -> dict[str, np.ndarray]:
    """The snippet around ``entry`` in the ``features.py`` format.

    ``labelled`` maps frame stems to the split's entries (used with ``label_all_frames``).
    Raises BadExample naming the files when anything is missing, unreadable or mismatched.
    """
    frame, label = load_labelled(entry, cfg.label_format)
    size = frame.shape[:2]
    if cfg.resize is None and size != tuple(cfg.image_size):
        raise BadExample(f"{entry.image}: frame is {size[1]}x{size[0]} but the config "
                         f"expects {cfg.image_size[1]}x{cfg.image_size[0]} (width x height); "
                         f"set resize=(height, width) to resize frames")
    match = _FRAME_NAME.match(entry.name)
    if cfg.num_frames > 1 and not match:
        raise BadExample(f"{entry.image}: the name does not end in a frame number, so its "
                         f"30 fps neighbours cannot be found (expected e.g. 0016E5_08190.png)")
    prefix, number, digits = parse_frame_name(entry.name) if match else ("", -1, 0)
    frames, labels, has_label = [], [], []
    for offset in range(-cfg.frames_before, cfg.frames_after + 1):
        if offset == 0:
            frames.append(frame)
            labels.append(label)
            has_label.append(True)
            continue
        stem = frame_stem(prefix, number + offset, digits) if number + offset >= 0 else None
        other = (labelled or {}).get(stem) if cfg.label_all_frames and stem else None
        if other is not None:
            other_frame, other_label = load_labelled(other, cfg.label_format)
            if other_frame.shape[:2] != size:
                raise BadExample(f"size mismatch: {other.image} is {other_frame.shape[1]}x"
                                 f"{other_frame.shape[0]} but {entry.image} in the same "
                                 f"snippet is {size[1]}x{size[0]}")
            frames.append(other_frame)
            labels.append(other_label)
            has_label.append(True)
            continue
        path = find_sequence_frame(cfg.sequence_dir, stem) if stem else None
        if path is None:
            raise BadExample(
                f"30 fps frame {stem or f'{prefix}<{number + offset}>'} (offset {offset:+d} "
                f"from {entry.image}) not found in {cfg.sequence_dir} or "
                f"{pathlib.Path(cfg.sequence_dir) / drive_of(entry.name)} "
                f"(suffixes {', '.join(IMAGE_SUFFIXES)})")
        seq = read_frame(path, "30 fps frame")
        if seq.shape[:2] != size:
            if not _same_aspect(seq.shape[:2], size):
                raise BadExample(f"size mismatch: 30 fps frame {path} is {seq.shape[1]}x"
                                 f"{seq.shape[0]} but labelled frame {entry.image} is "
                                 f"{size[1]}x{size[0]} (different aspect ratio)")
            seq = snippet_builder.resize(seq, size, nearest=False)
        frames.append(seq)
        labels.append(np.full(size, IGNORE_LABEL, np.uint8))
        has_label.append(False)
    out = cfg.out_size
    return {
        "frames": np.stack([snippet_builder.resize(f, out, nearest=False) for f in frames]),
        "labels": np.stack([snippet_builder.resize(l, out, nearest=True) for l in labels]),
        "has_label": np.asarray(has_label, bool),
        "label_index": np.int32(cfg.frames_before),
        "snippet_id": np.int64(entry.index),
        "frame_index": np.int64(number),  # in the drive's video; -1 when the name has none
    }


# ---------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------

class CamVid(snippet_builder.SnippetBuilder):
    """CamVid 11 classes (SegNet version), one snippet per labelled frame."""

    name = "camvid"
    BUILDER_CONFIGS = [DEFAULT]
    DEFAULT_CONFIG_NAME = "default"
    EXPECTED = EXPECTED_LAYOUT
    MANUAL_DOWNLOAD_INSTRUCTIONS = EXPECTED_LAYOUT + (
        ". Pass that folder as the manual dir (data_prep/camvid.py --manual_dir=...).")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        check_config(self.builder_config)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        h, w = cfg.out_size
        return self.dataset_info_from_configs(
            description=(f"CamVid, 11 classes {list(CLASS_NAMES)} (raw id 11 = Unlabelled "
                         f"-> 255), {w}x{h}, {cfg.frames_before}+1+{cfg.frames_after} "
                         f"frames per snippet."),
            features=snippet_builder.snippet_features(cfg.num_frames, (h, w)),
            supervised_keys=None,
            homepage="http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/",
            citation=CITATION,
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        root = self._manual_root(dl_manager)
        splits = present_splits(root)
        if not splits:
            raise FileNotFoundError(f"CamVid manual dir {root} has no split folders (found "
                                    f"{sorted(p.name for p in root.iterdir())[:20]}); "
                                    f"{EXPECTED_LAYOUT}")
        if self.builder_config.sequence_dir and not pathlib.Path(
                self.builder_config.sequence_dir).is_dir():
            raise FileNotFoundError(f"CamVid sequence_dir {self.builder_config.sequence_dir} "
                                    f"(the 30 fps frames) does not exist")
        lists = {split: list_split(root, split) for split in splits}
        self.info.metadata["names"] = {s: [e.name for e in v] for s, v in lists.items()}
        return {split: self._generate_examples(split, entries)
                for split, entries in lists.items()}

    def _generate_examples(self, split: str, entries: list[Entry]):
        cfg = self.builder_config
        labelled = {e.name: e for e in entries} if cfg.label_all_frames else None
        fn = functools.partial(_load_for_builder, cfg, labelled=labelled)
        for entry, example in self._write(split, entries, fn, what=lambda e: e.name):
            yield entry.index, example


def _load_for_builder(cfg, entry, labelled=None):
    # Looked up at call time so tests can patch ``load_example``.
    return load_example(cfg, entry, labelled)


def make_builder(data_dir: str, config: str | CamVidConfig = "default", **kwargs) -> CamVid:
    """The builder for "default" or a custom ``CamVidConfig`` (see ``custom_config``)."""
    return CamVid(config=config, data_dir=os.path.expanduser(data_dir), **kwargs)


def build(data_dir: str, manual_dir: str | os.PathLike, config: str | CamVidConfig = "default",
          skip_bad: bool | None = None, num_workers: int | None = None) -> CamVid:
    """Builds every split whose folders are in ``manual_dir`` (if not built yet)."""
    builder = make_builder(data_dir, config, skip_bad=skip_bad, num_workers=num_workers)
    return snippet_builder.prepare(builder, manual_dir)
