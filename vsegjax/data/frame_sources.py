"""Frames of one video by position: a folder of images or a video file, read lazily.

``FolderFrames`` / ``VideoFrames`` give frame k (cached while windows overlap), ``Window``
picks positions, ``make_snippet`` reads one snippet in the ``features.py`` format. Every
error is a ``BadExample`` naming the file(s). The DAVIS and user-video builders
(``video_datasets``), the propagation benchmark and ``autolabel`` read video this way.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from vsegjax.data import flow_io
from vsegjax.data.labels import IGNORE_LABEL as IGNORE, LabelError
from vsegjax.data.snippet_builder import BadExample, MissingExample, check_not_truncated, read_frame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def natural_key(name: str) -> list:
    """Sort key that puts ``f2.png`` before ``f10.png`` (same as plain order when padded)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder, what: str, suffixes=IMAGE_SUFFIXES, error=FileNotFoundError):
    """The image files in ``folder`` in natural order; ``error`` naming it if none/missing.

    Frames are matched to labels and outputs by file stem, so two images with one stem
    (``00001.jpg`` and ``00001.png``) are refused naming both, and so is a stem that
    cannot name a file (``...png`` has the stem ``..``); other dot-files are hidden files
    (``._x.png`` from macOS) and are left out.
    """
    folder = pathlib.Path(folder).expanduser()
    if not folder.is_dir():
        raise error(f"{what} folder not found: {folder}")
    found, by_stem = [], {}
    for p in folder.iterdir():
        if not p.is_file() or p.suffix.lower() not in suffixes:
            continue
        if p.stem in ("", ".", ".."):
            raise error(f"{what}: {p} has the file stem {p.stem!r}, which cannot name its "
                        f"outputs; rename it")
        if p.name.startswith("."):
            continue
        if p.stem in by_stem:
            first, second = sorted([by_stem[p.stem], p])
            raise error(f"{what}: {first} and {second} have the same stem {p.stem!r}, so their "
                        f"labels and outputs would be one file; keep one of them")
        by_stem[p.stem] = p
        found.append(p)
    if not found:
        raise error(f"{what} folder {folder} holds no {'/'.join(suffixes)} files")
    return sorted(found, key=lambda p: natural_key(p.name))


def is_palette_png(path: pathlib.Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    return head.startswith(b"\x89PNG") and head[12:16] == b"IHDR" and head[25] == 3


def read_label_ids(path) -> np.ndarray:
    """Raw ids of a label PNG, uint8 [H, W]: palette indices of a palette PNG (OpenCV
    would expand those to colours), else the grey values."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise MissingExample(f"label file not found: {path}", [path])
    check_not_truncated(path)
    if is_palette_png(path):
        from PIL import Image  # pillow comes with tensorboard/matplotlib
        try:
            with Image.open(path) as im:
                ids = np.array(im.convert("P") if im.mode != "P" else im)
        except (OSError, SyntaxError, ValueError) as e:
            raise BadExample(f"{path}: cannot decode the palette PNG ({e})", [path]) from e
        return ids.astype(np.uint8)
    try:
        return flow_io.read_mask(path)
    except ValueError as e:
        raise BadExample(str(e), [path]) from e


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
                raise BadExample(str(e), [path]) from e
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
            raise BadExample(f"{self.path}: OpenCV could not decode any frame of this "
                                f"video (corrupt, truncated or an unsupported codec)", [self.path])
        self.stems = [f"{n:06d}" for n in self.numbers]
        self._cap, self._next = None, 0

    def _open(self):
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise BadExample(f"{self.path}: OpenCV cannot open this video (corrupt, not a "
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
                raise BadExample(f"{self.path}: the video ends at frame {self._next}, "
                                    f"before frame {target}", [self.path])
            self._next += 1
        ok, bgr = self._cap.read()
        self._next += 1
        if not ok or bgr is None:
            self.close()
            raise BadExample(f"{self.path}: cannot decode frame {target}", [self.path])
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
        raise BadExample(f"frames of different sizes in one snippet: {listing}",
                            [source.file(k) for k in sizes.values()])
    h, w = frames[0].shape[:2]
    t = len(frames)
    out_labels = np.full((t, h, w), IGNORE, np.uint8)
    has_label = np.zeros(t, bool)
    for i, k in enumerate(window.positions):
        if k in labels:
            label = source.label(k, labels[k], decode)
            if label.shape != (h, w):
                raise BadExample(
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
