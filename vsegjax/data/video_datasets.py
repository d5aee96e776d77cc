"""TFDS builders for real video in the ``features.py`` snippet format (ArrayRecord).

* ``Davis`` (TFDS name ``vsegjax_davis``; TFDS ships its own ``davis``): DAVIS 2016/2017,
  ``JPEGImages/<res>/<seq>/%05d.jpg`` + ``Annotations/<res>/<seq>/%05d.png``, a mask on
  every frame, for measuring label propagation. DAVIS 2016 masks (0/255) become classes
  background 0 / object 1. DAVIS 2017 palette masks hold instance ids (0 background, k =
  object k): ``instances=False`` maps every object to 1, ``instances=True`` keeps the ids
  (``info.metadata["num_classes"]`` = largest id + 1). Snippets are whole sequences or
  windows of ``num_frames`` every ``stride`` frames; ``label_index`` is the first frame.
  ``ImageSets/<year>/*.txt`` (or the DAVIS 2016 ``ImageSets/<res>/*.txt``) define the
  splits; without them every sequence goes to the split ``full``.
* ``UserVideo`` (TFDS name ``user_video``): a folder of frames (natural sort of the file
  names) or a video file decoded with OpenCV, plus an optional folder of label PNGs
  (class ids, 255 = ignore; stems match frame stems, or ``%06d`` frame numbers of a
  video). One snippet of ``frames_before + 1 + frames_after`` frames around each labelled
  frame (shifted to fit at the ends), or sliding windows when there are no labels. One
  split, ``full`` (TFDS reserves ``all``; reading ``split="all"`` also works).

Besides the ``features.py`` keys (no flow) both write ``frame_index`` (int64, the source
frame number of ``frames[label_index]``: DAVIS file number, video frame number, or
position in the sorted frame folder; frames are consecutive, or every ``every_nth``-th),
and DAVIS writes ``sequence`` (a string; bytes when read back).

DAVIS follows the CamVid/Sintel builders: the raw folder is TFDS' manual dir, configs
are the presets ``2016`` (default), ``2017``, ``2017_instances`` (whole sequences at
480p) or ``davis_config(...)``, whose name encodes the options (not the folder), so a
prepared build is found again from the options alone. A ``UserVideo`` config carries the
input paths (``user_video_config(...)``); its name adds a digest of every option and
path, so another input or option never reuses an old build (new files at the same
path do: pass ``name=`` or delete the build). Build with ``data_prep/davis.py`` /
``data_prep/user_video.py`` or ``build(...)``.

Bad input raises an error naming the file(s) (``BadInputError``, a ValueError; a missing
or empty folder is a FileNotFoundError). With ``skip_bad=True`` a snippet that touches a
bad file is left out instead, and ``builder.skipped`` / ``info.metadata["skipped"]`` list
them (what, why, files). Input files are only ever read. TFDS writes into an
``*.incomplete*`` folder and renames it at the end, so an interrupted build never looks
complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import re
from typing import Any, Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

from vsegjax.data import flow_io
from vsegjax.data.labels import LabelEncoding, LabelError

IGNORE = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
_Enc = tfds.features.Encoding
_log = logging.getLogger(__name__)


class BadInputError(ValueError):
    """Input that cannot make a snippet; the message names the file(s), ``paths`` lists them."""

    def __init__(self, message: str, paths: Sequence[Any] = ()):
        super().__init__(message)
        self.paths = tuple(str(p) for p in paths)


class MissingInputError(BadInputError, FileNotFoundError):
    """A file or per-sequence folder that should exist but does not."""


# ----------------------------------------------------------------------------- reading


def natural_key(name: str) -> list:
    """Sort key that puts ``f2.png`` before ``f10.png`` (same as plain order when padded)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder, what: str, suffixes=IMAGE_SUFFIXES, error=FileNotFoundError):
    """The image files in ``folder`` in natural order; ``error`` naming it if none/missing."""
    folder = pathlib.Path(folder).expanduser()
    if not folder.is_dir():
        raise error(f"{what} folder not found: {folder}")
    found = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")]
    if not found:
        raise error(f"{what} folder {folder} holds no {'/'.join(suffixes)} files")
    return sorted(found, key=lambda p: natural_key(p.name))


def _check_not_truncated(path: pathlib.Path) -> None:
    """OpenCV decodes a cut-off JPEG as a half-grey picture; catch that by the end marker."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, size - 1024))
        tail = f.read()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in tail[-64:]:
        raise BadInputError(f"{path}: truncated PNG (no IEND chunk at the end)", [path])
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail:
        raise BadInputError(f"{path}: truncated JPEG (no end-of-image marker)", [path])
    if size == 0:
        raise BadInputError(f"{path}: empty file", [path])


def read_frame(path) -> np.ndarray:
    """A colour frame as uint8 [H, W, 3] RGB; BadInputError naming the file if unreadable."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise MissingInputError(f"image file not found: {path}", [path])
    _check_not_truncated(path)
    try:
        return flow_io.read_image(path)
    except ValueError as e:
        raise BadInputError(str(e), [path]) from e


def _is_palette_png(path: pathlib.Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    return head.startswith(b"\x89PNG") and head[12:16] == b"IHDR" and head[25] == 3


def read_label_ids(path) -> np.ndarray:
    """Raw ids of a label PNG, uint8 [H, W]: palette indices of a palette PNG (OpenCV
    would expand those to colours), else the grey values."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise MissingInputError(f"label file not found: {path}", [path])
    _check_not_truncated(path)
    if _is_palette_png(path):
        from PIL import Image  # pillow comes with tensorboard/matplotlib
        try:
            with Image.open(path) as im:
                ids = np.array(im.convert("P") if im.mode != "P" else im)
        except (OSError, SyntaxError, ValueError) as e:
            raise BadInputError(f"{path}: cannot decode the palette PNG ({e})", [path]) from e
        return ids.astype(np.uint8)
    try:
        return flow_io.read_mask(path)
    except ValueError as e:
        raise BadInputError(str(e), [path]) from e


class _Frames:
    """Frames of one sequence by position, with a cache for overlapping windows."""

    numbers: list[int]   # frame number in the source (file position / video frame)
    stems: list[str]     # names labels are matched by

    def __init__(self):
        self._frames: dict[int, np.ndarray] = {}
        self._labels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.numbers)

    def get(self, k: int) -> np.ndarray:
        if k not in self._frames:
            self._frames[k] = self._read(k)
        return self._frames[k]

    def label(self, k: int, path: pathlib.Path, decode: Callable) -> np.ndarray:
        if k not in self._labels:
            try:
                self._labels[k] = decode(path)
            except LabelError as e:
                raise BadInputError(str(e), [path]) from e
        return self._labels[k]

    def forget_before(self, k: int) -> None:
        for cache in (self._frames, self._labels):
            for key in [key for key in cache if key < k]:
                del cache[key]

    def close(self) -> None:
        self._frames.clear()
        self._labels.clear()


class FolderFrames(_Frames):
    def __init__(self, paths: Sequence[pathlib.Path], numbers: Sequence[int] | None = None):
        super().__init__()
        self.paths = list(paths)
        self.numbers = list(numbers) if numbers is not None else list(range(len(self.paths)))
        self.stems = [p.stem for p in self.paths]

    def where(self, k: int) -> str:
        return str(self.paths[k])

    def file(self, k: int) -> str:
        return str(self.paths[k])

    def _read(self, k: int) -> np.ndarray:
        return read_frame(self.paths[k])


class VideoFrames(_Frames):
    """Frames of a video file, decoded in order (cv2.VideoCapture seeking is unreliable)."""

    def __init__(self, path, every_nth: int = 1, max_frames: int | None = None):
        super().__init__()
        self.path = pathlib.Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        cap, raw, self.numbers = self._open(), 0, []
        try:  # counting pass: grab() skips the colour conversion
            while max_frames is None or len(self.numbers) < max_frames:
                if not cap.grab():
                    break
                if raw % every_nth == 0:
                    self.numbers.append(raw)
                raw += 1
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        finally:
            cap.release()
        if not self.numbers:
            raise BadInputError(f"{self.path}: OpenCV could not decode any frame of this "
                                f"video (corrupt, truncated or an unsupported codec)", [self.path])
        self.stems = [f"{n:06d}" for n in self.numbers]
        self._cap, self._next = None, 0

    def _open(self):
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise BadInputError(f"{self.path}: OpenCV cannot open this video (corrupt, not a "
                                f"video, or an unsupported codec)", [self.path])
        return cap

    def where(self, k: int) -> str:
        return f"{self.path} frame {self.numbers[k]}"

    def file(self, k: int) -> str:
        return str(self.path)

    def _read(self, k: int) -> np.ndarray:
        target = self.numbers[k]
        if self._cap is None or self._next > target:
            self.close()
            self._cap, self._next = self._open(), 0
        while self._next < target:
            if not self._cap.grab():
                self.close()
                raise BadInputError(f"{self.path}: the video ends at frame {self._next}, "
                                    f"before frame {target}", [self.path])
            self._next += 1
        ok, bgr = self._cap.read()
        self._next += 1
        if not ok or bgr is None:
            self.close()
            raise BadInputError(f"{self.path}: cannot decode frame {target}", [self.path])
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        super().close()
        if self._cap is not None:
            self._cap.release()
        self._cap = None


# ----------------------------------------------------------------------------- snippets


@dataclasses.dataclass(frozen=True)
class Window:
    positions: tuple[int, ...]   # positions in the frame source
    label_index: int


def make_snippet(source: _Frames, window: Window, labels: Mapping[int, pathlib.Path],
                 decode: Callable, resize: tuple[int, int] | None, snippet_id: int) -> dict:
    """Reads and checks one snippet: frames [T,H,W,3], labels [T,H,W] (255 unlabelled)."""
    frames = [source.get(k) for k in window.positions]
    sizes: dict[tuple[int, int], int] = {}
    for k, frame in zip(window.positions, frames):
        sizes.setdefault(frame.shape[:2], k)
    if len(sizes) > 1:
        listing = ", ".join(f"{source.where(k)} is {w}x{h}" for (h, w), k in sizes.items())
        raise BadInputError(f"frames of different sizes in one snippet: {listing}",
                            [source.file(k) for k in sizes.values()])
    h, w = frames[0].shape[:2]
    t = len(frames)
    out_labels = np.full((t, h, w), IGNORE, np.uint8)
    has_label = np.zeros(t, bool)
    for i, k in enumerate(window.positions):
        if k in labels:
            label = source.label(k, labels[k], decode)
            if label.shape != (h, w):
                raise BadInputError(
                    f"label {labels[k]} is {label.shape[1]}x{label.shape[0]} but its frame "
                    f"{source.where(k)} is {w}x{h}", [labels[k], source.file(k)])
            out_labels[i], has_label[i] = label, True
    frames = np.stack(frames)
    if resize is not None and (h, w) != tuple(resize):
        rh, rw = resize
        frames = np.stack([cv2.resize(f, (rw, rh), interpolation=cv2.INTER_LINEAR)
                           for f in frames])
        out_labels = np.stack([cv2.resize(lab, (rw, rh), interpolation=cv2.INTER_NEAREST)
                               for lab in out_labels])
    return {
        "frames": frames,
        "labels": out_labels,
        "has_label": has_label,
        "label_index": np.int32(window.label_index),
        # As in CamVid/Cityscapes: the source frame number of the labelled frame.
        "frame_index": np.int64(source.numbers[window.positions[window.label_index]]),
        "snippet_id": np.int64(snippet_id),
    }


def sliding_windows(n: int, num_frames: int, stride: int, label_index: int = 0) -> list[Window]:
    return [Window(tuple(range(s, s + num_frames)), label_index)
            for s in range(0, n - num_frames + 1, stride)]


class SkipReport:
    """What ``skip_bad`` left out: entries (what, why, files)."""

    def __init__(self):
        self.entries: list[dict[str, Any]] = []

    def add(self, what: str, error: Exception) -> None:
        self.entries.append({"what": what, "why": str(error),
                             "files": list(getattr(error, "paths", ()))})

    @property
    def files(self) -> list[str]:
        return sorted({f for e in self.entries for f in e["files"]})

    def summary(self, total: int) -> str:
        lines = [f"skipped {len(self.entries)} bad item(s) ({total} snippets kept); "
                 f"bad files: {self.files}"]
        lines += [f"  {e['what']}: {e['why']}" for e in self.entries]
        return "\n".join(lines)


def _features(num_frames: int | None, resize, extra: Mapping[str, Any] | None = None):
    t = num_frames
    h, w = resize if resize is not None else (None, None)
    spec = {
        "frames": tfds.features.Tensor(shape=(t, h, w, 3), dtype=np.uint8, encoding=_Enc.BYTES),
        "labels": tfds.features.Tensor(shape=(t, h, w), dtype=np.uint8, encoding=_Enc.ZLIB),
        "has_label": tfds.features.Tensor(shape=(t,), dtype=np.bool_, encoding=_Enc.BYTES),
        "label_index": tfds.features.Scalar(np.int32),
        "frame_index": tfds.features.Scalar(np.int64),
        "snippet_id": tfds.features.Scalar(np.int64),
    }
    spec.update(extra or {})
    return tfds.features.FeaturesDict(spec)


def _config_digest(cfg, fields: Sequence[str]) -> str:
    key = repr([(f, getattr(cfg, f)) for f in fields]).encode()
    return hashlib.sha1(key).hexdigest()[:8]


def _check_positive(cfg, fields: Sequence[str], allow_none=True, minimum=1) -> None:
    for f in fields:
        v = getattr(cfg, f)
        if v is None and allow_none:
            continue
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
            raise ValueError(f"config field {f}: must be an integer >= {minimum}; got {v!r}")


def _check_resize(cfg) -> None:
    if cfg.resize is None:
        return
    size = tuple(cfg.resize)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
        raise ValueError(f"config field resize: must be (height, width) > 0; got {cfg.resize!r}")
    object.__setattr__(cfg, "resize", (int(size[0]), int(size[1])))


class _SnippetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared plumbing: ArrayRecord, skip report, progress messages."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def __init__(self, *, skip_bad: bool | None = None,
                 progress: Callable[[str], None] | None = None, **kwargs):
        super().__init__(file_format="array_record", **kwargs)
        if self.builder_config is None:
            raise ValueError(f"{type(self).__name__} needs a config (make one with "
                             f"user_video_config(...))")
        self._skip_bad = self.builder_config.skip_bad if skip_bad is None else skip_bad
        self._progress = progress or _log.info
        self.skipped: dict[str, list[dict[str, Any]]] = {}

    def _emit(self, split: str, items: Iterator[tuple[str, Callable[[int], dict]]],
              report: SkipReport) -> Iterator[tuple[int, dict]]:
        """Yields (index, example) for each (description, make(index)), skipping bad ones."""
        index = 0
        for what, make in items:
            try:
                example = make(index)
            except BadInputError as e:
                if not self._skip_bad:
                    raise
                report.add(what, e)
                self._progress(f"{split}: skipped {what}: {e}")
                continue
            yield index, example
            index += 1
        self.skipped[split] = report.entries
        self.info.metadata.setdefault("skipped", {})[split] = report.entries
        if report.entries:
            self._progress(f"{split}: {report.summary(index)}")
        if index == 0:
            raise ValueError(f"{self.name}/{self.builder_config.name} split {split!r}: no "
                             f"snippet could be made"
                             + (f"; {report.summary(0)}" if report.entries else ""))
        self._progress(f"{split}: {index} snippets written")


# ----------------------------------------------------------------------------- DAVIS


@dataclasses.dataclass(eq=False)
class DavisConfig(tfds.core.BuilderConfig):
    year: str = "2016"                    # "2016" (0/255 masks) or "2017" (palette ids)
    resolution: str = "480p"
    instances: bool = False               # 2017: keep instance ids instead of 0/1
    num_frames: int | None = None         # None: whole sequences
    stride: int | None = None             # window step (default num_frames)
    resize: tuple[int, int] | None = None  # (h, w): frames bilinear, labels nearest
    image_sets: str | None = None         # split-file folder (default: auto)
    skip_bad: bool = False                # (not part of the name)

    def __post_init__(self):
        if str(self.year) not in ("2016", "2017"):
            raise ValueError(f"config field year: must be '2016' or '2017'; got {self.year!r}")
        object.__setattr__(self, "year", str(self.year))
        if self.instances and self.year == "2016":
            raise ValueError("config field instances: DAVIS 2016 has one object per "
                             "sequence; instance ids need year='2017'")
        _check_positive(self, ("num_frames", "stride"))
        if self.stride is not None and self.num_frames is None:
            raise ValueError("config field stride: needs num_frames (whole sequences have "
                             "no stride)")
        if self.num_frames is not None and self.stride is None:
            object.__setattr__(self, "stride", self.num_frames)
        _check_resize(self)

    @property
    def num_classes(self) -> int | None:
        """2 for object masks; None for instance ids (see info.metadata['num_classes'])."""
        return None if self.instances else 2


_DAVIS_FIELDS = ("year", "resolution", "instances", "num_frames", "stride", "resize",
                 "image_sets")
DAVIS_PRESETS = [
    DavisConfig(name="2016", description="DAVIS 2016, whole sequences, 480p, classes 0/1"),
    DavisConfig(name="2017", year="2017",
                description="DAVIS 2017, whole sequences, 480p, every object = 1"),
    DavisConfig(name="2017_instances", year="2017", instances=True,
                description="DAVIS 2017, whole sequences, 480p, instance ids"),
]
DAVIS_LAYOUT = ("a DAVIS folder holds JPEGImages/480p/<seq>/*.jpg and "
                "Annotations/480p/<seq>/*.png, optionally ImageSets/<year>/*.txt")


def davis_config(year: str | int = "2016", *, resolution: str = "480p",
                 instances: bool = False, num_frames: int | None = None,
                 stride: int | None = None, resize: Sequence[int] | None = None,
                 image_sets: str | None = None, skip_bad: bool = False,
                 name: str | None = None) -> DavisConfig:
    """A DAVIS config; its default name encodes the options (readable part + digest)."""
    cfg = DavisConfig(name="pending", year=str(year), resolution=resolution,
                      instances=instances,
                      num_frames=num_frames, stride=stride,
                      resize=tuple(resize) if resize is not None else None,
                      image_sets=image_sets, skip_bad=skip_bad)
    if name is None:
        win = "seq" if cfg.num_frames is None else f"t{cfg.num_frames}s{cfg.stride}"
        size = f"{cfg.resize[0]}x{cfg.resize[1]}" if cfg.resize else resolution
        name = (f"{cfg.year}-{'inst' if instances else 'obj'}-{win}-{size}-"
                f"{_config_digest(cfg, _DAVIS_FIELDS)}")
    cfg.name = name
    cfg.description = f"DAVIS {cfg.year} {cfg.resolution}"
    return cfg


def _parse_split_file(path: pathlib.Path) -> list[str]:
    """Sequence names from a DAVIS split file: one name a line (2017 layout) or lines of
    ``/JPEGImages/480p/<seq>/00000.jpg /Annotations/...`` (2016 layout)."""
    names: list[str] = []
    for line in path.read_text().splitlines():
        token = line.split()[0] if line.split() else ""
        if not token:
            continue
        parts = [p for p in token.split("/") if p]
        at = parts.index("JPEGImages") + 2 if "JPEGImages" in parts else 0
        if at >= len(parts):
            raise ValueError(f"{path}: no sequence name in the line {line!r}")
        seq = parts[at]
        if seq not in names:
            names.append(seq)
    return names


def davis_splits(root, cfg: DavisConfig) -> dict[str, list[str]]:
    """Split name -> sequence names (from ImageSets, else {"full": every sequence})."""
    root = pathlib.Path(root).expanduser()
    jpeg_dir = root / "JPEGImages" / cfg.resolution
    if not jpeg_dir.is_dir():
        raise FileNotFoundError(f"DAVIS frames folder not found: {jpeg_dir} ({DAVIS_LAYOUT})")
    sequences = sorted((p.name for p in jpeg_dir.iterdir() if p.is_dir()), key=natural_key)
    if not sequences:
        raise FileNotFoundError(f"DAVIS frames folder {jpeg_dir} holds no sequence folders")
    if cfg.image_sets is not None:
        candidates = [root / cfg.image_sets]
        if not candidates[0].is_dir():
            raise FileNotFoundError(f"config field image_sets: folder not found: {candidates[0]}")
    else:
        candidates = [root / "ImageSets" / cfg.year, root / "ImageSets" / cfg.resolution]
    for folder in candidates:
        files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
        files = [f for f in files if f.stem != "trainval"]  # the union of train and val
        if not files:
            continue
        splits = {}
        for f in files:
            names = _parse_split_file(f)
            missing = [s for s in names if s not in sequences]
            if missing:
                raise FileNotFoundError(f"split file {f} lists sequences with no folder in "
                                        f"{jpeg_dir}: {missing[:10]}")
            if names:
                splits[re.sub(r"\W", "_", f.stem)] = names
        if splits:
            return splits
    return {"full": sequences}


def davis_decoder(cfg: DavisConfig) -> Callable[[pathlib.Path], np.ndarray]:
    """Annotation PNG -> class ids: 2016 grey 0/255 -> 0/1; palette (or 2017 grey) ids
    kept with ``instances`` else every object -> 1; 255 in id masks stays ignore."""
    binary = LabelEncoding(ids={0: 0, 255: 1})

    def decode(path):
        ids = read_label_ids(path)
        if cfg.year == "2016" and not _is_palette_png(pathlib.Path(path)):
            return binary.decode_ids(ids, path)
        if cfg.instances:
            return ids
        return np.where((ids != 0) & (ids != IGNORE), 1, ids).astype(np.uint8)
    return decode


class Davis(_SnippetBuilder):
    """DAVIS 2016/2017 snippets with a mask on every frame (see the module docstring)."""

    name = "vsegjax_davis"  # TFDS already has a builder named "davis"
    BUILDER_CONFIGS = DAVIS_PRESETS
    DEFAULT_CONFIG_NAME = "2016"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Download DAVIS from https://davischallenge.org/; "
                                    f"{DAVIS_LAYOUT}. Pass that folder as the manual dir "
                                    f"(data_prep/davis.py --manual_dir=...).")

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        fields = {f: getattr(cfg, f) for f in _DAVIS_FIELDS}
        return self.dataset_info_from_configs(
            description=f"DAVIS {cfg.year} video object segmentation snippets; {fields}.",
            features=_features(cfg.num_frames, cfg.resize, {
                "sequence": tfds.features.Tensor(shape=(), dtype=np.str_)}),
            metadata=tfds.core.MetadataDict(),
            homepage="https://davischallenge.org/",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        try:
            self._root = pathlib.Path(dl_manager.manual_dir)
        except AssertionError as e:  # TFDS: "Manual directory ... does not exist or is empty"
            raise FileNotFoundError(f"DAVIS manual dir missing or empty: {e}") from e
        return {split: self._generate_examples(split, seqs)
                for split, seqs in davis_splits(self._root, self.builder_config).items()}

    def _generate_examples(self, split: str, sequences: list[str]):
        report = SkipReport()
        decode = davis_decoder(self.builder_config)
        self.info.metadata["num_classes"] = self.info.metadata.get("num_classes", 2)

        def items():
            for n, seq in enumerate(sequences):
                try:
                    source, labels, windows = self._plan_sequence(seq)
                except BadInputError as e:
                    if not self._skip_bad:
                        raise
                    report.add(f"sequence {seq}", e)
                    self._progress(f"{split}: skipped sequence {seq}: {e}")
                    continue
                for window in windows:
                    source.forget_before(window.positions[0])
                    yield (f"sequence {seq} frames {source.numbers[window.positions[0]]}.."
                           f"{source.numbers[window.positions[-1]]}",
                           lambda i, w=window, src=source, lab=labels, name=seq:
                           self._example(src, w, lab, decode, name, i))
                source.close()
                self._progress(f"{split}: sequence {n + 1}/{len(sequences)} {seq}: "
                               f"{len(source)} frames, {len(windows)} snippets")

        yield from self._emit(split, items(), report)

    def _plan_sequence(self, seq: str):
        cfg, root = self.builder_config, self._root
        paths = list_images(root / "JPEGImages" / cfg.resolution / seq, f"DAVIS {seq} frames",
                            error=MissingInputError)
        ann_dir = root / "Annotations" / cfg.resolution / seq
        annotations = list_images(ann_dir, f"DAVIS {seq} annotations", (".png",),
                                  error=MissingInputError)
        stems = {p.stem for p in paths}
        orphans = [str(a) for a in annotations if a.stem not in stems]
        if orphans:
            raise BadInputError(f"annotations with no matching frame in "
                                f"{paths[0].parent}: {orphans[:10]}", orphans)
        numbers = [int(p.stem) if p.stem.isdigit() else i for i, p in enumerate(paths)]
        source = FolderFrames(paths, numbers)
        labels = {k: ann_dir / f"{p.stem}.png" for k, p in enumerate(paths)}
        if cfg.num_frames is None:
            windows = [Window(tuple(range(len(paths))), 0)]
        else:
            windows = sliding_windows(len(paths), cfg.num_frames, cfg.stride)
            if not windows:
                self._progress(f"sequence {seq}: {len(paths)} frames, fewer than "
                               f"num_frames={cfg.num_frames}; no snippet")
        return source, labels, windows

    def _example(self, source, window, labels, decode, seq, index):
        example = make_snippet(source, window, labels, decode, self.builder_config.resize,
                               index)
        example["sequence"] = seq
        top = example["labels"][example["labels"] != IGNORE]
        if top.size:
            meta = self.info.metadata
            meta["num_classes"] = max(meta.get("num_classes", 2), int(top.max()) + 1)
        return example


# ----------------------------------------------------------------------------- user video


@dataclasses.dataclass(eq=False)
class UserVideoConfig(tfds.core.BuilderConfig):
    frames: str = ""                      # folder of frames, or a video file
    labels: str | None = None             # folder of label PNGs (optional)
    num_classes: int | None = None        # required with labels
    frames_before: int = 2
    frames_after: int = 2
    stride: int | None = None             # window step without labels (default num_frames)
    max_frames: int | None = None         # keep at most this many frames (after every_nth)
    every_nth: int = 1
    resize: tuple[int, int] | None = None
    skip_bad: bool = False                # (not part of the name)

    def __post_init__(self):
        _check_positive(self, ("frames_before", "frames_after"), allow_none=False, minimum=0)
        _check_positive(self, ("stride", "max_frames"))
        _check_positive(self, ("every_nth",), allow_none=False)
        if self.stride is None:
            object.__setattr__(self, "stride", self.num_frames)
        if self.labels is not None:
            if self.num_classes is None:
                raise ValueError("config field num_classes: required when labels are given "
                                 "(label ids are checked against it)")
            _check_positive(self, ("num_classes",))
            if self.num_classes > 255:
                raise ValueError(f"config field num_classes: at most 255 (255 = ignore); "
                                 f"got {self.num_classes}")
        _check_resize(self)

    @property
    def num_frames(self) -> int:
        return self.frames_before + 1 + self.frames_after


_USER_FIELDS = ("frames", "labels", "num_classes", "frames_before", "frames_after", "stride",
                "max_frames", "every_nth", "resize")


def user_video_config(frames, labels=None, *, num_classes: int | None = None,
                      frames_before: int = 2, frames_after: int = 2,
                      stride: int | None = None, max_frames: int | None = None,
                      every_nth: int = 1, resize: Sequence[int] | None = None,
                      skip_bad: bool = False, name: str | None = None) -> UserVideoConfig:
    """A config for a user's video; the default name is the input's name, the snippet
    length, the size and a digest of every option (paths included)."""
    def absolute(p):
        return None if p is None else os.path.abspath(os.path.expanduser(str(p)))

    cfg = UserVideoConfig(name="pending", frames=absolute(frames), labels=absolute(labels),
                          num_classes=num_classes, frames_before=frames_before,
                          frames_after=frames_after, stride=stride, max_frames=max_frames,
                          every_nth=every_nth,
                          resize=tuple(resize) if resize is not None else None,
                          skip_bad=skip_bad)
    if name is None:
        stem = re.sub(r"[^\w-]", "_", pathlib.Path(cfg.frames).stem or "video")[:40]
        size = f"{cfg.resize[0]}x{cfg.resize[1]}" if cfg.resize else "full"
        name = f"{stem}-t{cfg.num_frames}-{size}-{_config_digest(cfg, _USER_FIELDS)}"
    cfg.name = name
    cfg.description = f"user video {cfg.frames}"
    return cfg


def plan_user_video(cfg: UserVideoConfig, report: SkipReport | None = None):
    """(frame source, {position: label path}, windows); label problems go to ``report``
    when given (skip_bad), else raise."""
    frames = pathlib.Path(cfg.frames)
    if not frames.exists():
        raise FileNotFoundError(f"frames not found: {frames} (expected a folder of frames "
                                f"or a video file)")
    if frames.is_file():
        source = VideoFrames(frames, cfg.every_nth, cfg.max_frames)
    else:
        paths = list_images(frames, "frames")
        numbers = list(range(len(paths)))[::cfg.every_nth][:cfg.max_frames]
        source = FolderFrames([paths[i] for i in numbers], numbers)
        dup = {s for s in source.stems if source.stems.count(s) > 1}
        if dup:
            raise ValueError(f"frames folder {frames}: several frames share the stems "
                             f"{sorted(dup)[:5]} (labels are matched by stem)")
    labels: dict[int, pathlib.Path] = {}
    if cfg.labels is not None:
        by_stem = {s: k for k, s in enumerate(source.stems)}
        by_number = {n: k for k, n in enumerate(source.numbers)}
        for path in list_images(cfg.labels, "labels", (".png",)):
            if isinstance(source, VideoFrames):
                k = by_number.get(int(path.stem)) if path.stem.isdigit() else None
            else:
                k = by_stem.get(path.stem)
            if k is None:
                err = BadInputError(
                    f"label {path}: no frame {path.stem!r} among the {len(source)} frames "
                    f"read from {frames} (every_nth={cfg.every_nth}, "
                    f"max_frames={cfg.max_frames})", [path])
                if report is None:
                    raise err
                report.add(f"label {path.name}", err)
                continue
            labels[k] = path
    t, n = cfg.num_frames, len(source)
    if n < t:
        raise ValueError(f"{frames}: only {n} frames, fewer than num_frames={t} "
                         f"(frames_before + 1 + frames_after)")
    if cfg.labels is None:
        windows = sliding_windows(n, t, cfg.stride, cfg.frames_before)
    else:
        windows = []
        for k in sorted(labels):
            start = min(max(k - cfg.frames_before, 0), n - t)
            windows.append(Window(tuple(range(start, start + t)), k - start))
    return source, labels, windows


class UserVideo(_SnippetBuilder):
    """A user's frames or video plus optional label PNGs (see the module docstring)."""


    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        fields = {f: getattr(cfg, f) for f in _USER_FIELDS}
        return self.dataset_info_from_configs(
            description=f"Snippets of a user's video; {fields}.",
            features=_features(cfg.num_frames, cfg.resize),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"full": self._generate_examples("full")}

    def _generate_examples(self, split: str):
        cfg, report = self.builder_config, SkipReport()
        source, labels, windows = plan_user_video(cfg, report if self._skip_bad else None)
        for e in report.entries:
            self._progress(f"{split}: skipped {e['what']}: {e['why']}")
        meta = self.info.metadata
        meta.update(num_classes=cfg.num_classes, num_source_frames=len(source),
                    fps=getattr(source, "fps", None))
        self._progress(f"{cfg.frames}: {len(source)} frames, {len(labels)} labelled, "
                       f"{len(windows)} snippets to write")

        def items():
            for window in windows:
                source.forget_before(window.positions[0])
                first = source.numbers[window.positions[0]]
                last = source.numbers[window.positions[-1]]
                yield (f"frames {first}..{last}",
                       lambda i, w=window: make_snippet(source, w, labels, decode, cfg.resize, i))
            source.close()

        encoding = LabelEncoding(num_classes=cfg.num_classes)

        def decode(path):
            try:
                return encoding.decode_ids(read_label_ids(path), path)
            except LabelError as e:
                raise BadInputError(f"{e}; class ids must be < num_classes="
                                    f"{cfg.num_classes}, or 255 for ignore", [path]) from e

        yield from self._emit(split, items(), report)


# ----------------------------------------------------------------------------- helpers


def make_builder(kind: str, data_dir: str, config=None, **kwargs):
    """``kind`` "davis" (config: a preset name or ``davis_config(...)``, default "2016")
    or "user_video" (config: ``user_video_config(...)``). kwargs: skip_bad, progress."""
    cls = {"davis": Davis, "user_video": UserVideo}.get(kind)
    if cls is None:
        raise ValueError(f"unknown video dataset kind {kind!r}; known: davis, user_video")
    return cls(config=config, data_dir=os.path.expanduser(data_dir), **kwargs)


def build(kind: str, data_dir: str, config=None, manual_dir=None, *,
          skip_bad: bool | None = None, progress: Callable[[str], None] | None = None):
    """Builds the dataset unless already prepared; DAVIS reads the folder ``manual_dir``."""
    download_config = None
    if manual_dir is not None:
        manual = pathlib.Path(os.path.expanduser(os.fspath(manual_dir)))
        if not manual.is_dir():
            raise FileNotFoundError(f"manual dir {manual} does not exist"
                                    + (f"; {DAVIS_LAYOUT}" if kind == "davis" else ""))
        download_config = tfds.download.DownloadConfig(manual_dir=str(manual))
    builder = make_builder(kind, data_dir, config, skip_bad=skip_bad, progress=progress)
    builder.download_and_prepare(download_config=download_config)
    return builder
