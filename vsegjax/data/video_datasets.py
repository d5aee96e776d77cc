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

Bad input raises ``BadExample`` naming the file(s) (a missing file or folder is also a
FileNotFoundError); ``skip_bad`` and the skip records are ``snippet_builder``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
from typing import Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from vsegjax.data import snippet_builder
from vsegjax.data.frame_sources import (FolderFrames, VideoFrames, Window, is_palette_png,
                                        list_images, make_snippet, natural_key,
                                        read_label_ids, sliding_windows)
from vsegjax.data.labels import IGNORE_LABEL as IGNORE, LabelEncoding, LabelError
from vsegjax.data.snippet_builder import BadExample, MissingExample

Skip = Callable[[str, Exception], None]  # (what, error): raise it or record a skip


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
        if cfg.year == "2016" and not is_palette_png(pathlib.Path(path)):
            return binary.decode_ids(ids, path)
        if cfg.instances:
            return ids
        return np.where((ids != 0) & (ids != IGNORE), 1, ids).astype(np.uint8)
    return decode


class Davis(snippet_builder.SnippetBuilder):
    """DAVIS 2016/2017 snippets with a mask on every frame (see the module docstring)."""

    name = "vsegjax_davis"  # TFDS already has a builder named "davis"
    BUILDER_CONFIGS = DAVIS_PRESETS
    DEFAULT_CONFIG_NAME = "2016"
    EXPECTED = DAVIS_LAYOUT
    MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Download DAVIS from https://davischallenge.org/; "
                                    f"{DAVIS_LAYOUT}. Pass that folder as the manual dir "
                                    f"(data_prep/davis.py --manual_dir=...).")

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        fields = {f: getattr(cfg, f) for f in _DAVIS_FIELDS}
        return self.dataset_info_from_configs(
            description=f"DAVIS {cfg.year} video object segmentation snippets; {fields}.",
            features=snippet_builder.snippet_features(cfg.num_frames, cfg.resize, extra={
                "sequence": tfds.features.Tensor(shape=(), dtype=np.str_)}),
            metadata=tfds.core.MetadataDict(),
            homepage="https://davischallenge.org/",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        self._root = self._manual_root(dl_manager)
        return {split: self._generate_examples(split, seqs)
                for split, seqs in davis_splits(self._root, self.builder_config).items()}

    def _generate_examples(self, split: str, sequences: list[str]):
        decode = davis_decoder(self.builder_config)
        self.info.metadata["num_classes"] = self.info.metadata.get("num_classes", 2)

        def items():
            for n, seq in enumerate(sequences):
                try:
                    source, labels, windows = self._plan_sequence(seq)
                except BadExample as e:
                    self._skip(split, f"sequence {seq}", e)
                    continue
                for window in windows:
                    source.forget_before(window.positions[0])
                    yield (f"sequence {seq} frames {source.numbers[window.positions[0]]}.."
                           f"{source.numbers[window.positions[-1]]}",
                           lambda w=window, src=source, lab=labels, name=seq:
                           self._example(src, w, lab, decode, name))
                source.close()
                self.progress(f"{split}: sequence {n + 1}/{len(sequences)} {seq}: "
                              f"{len(source)} frames, {len(windows)} snippets")

        yield from _numbered(self._write(split, items(), lambda item: item[1](),
                                         what=lambda item: item[0], workers=1))

    def _plan_sequence(self, seq: str):
        cfg, root = self.builder_config, self._root
        paths = list_images(root / "JPEGImages" / cfg.resolution / seq, f"DAVIS {seq} frames",
                            error=MissingExample)
        ann_dir = root / "Annotations" / cfg.resolution / seq
        annotations = list_images(ann_dir, f"DAVIS {seq} annotations", (".png",),
                                  error=MissingExample)
        stems = {p.stem for p in paths}
        orphans = [str(a) for a in annotations if a.stem not in stems]
        if orphans:
            raise BadExample(f"annotations with no matching frame in "
                                f"{paths[0].parent}: {orphans[:10]}", orphans)
        numbers = [int(p.stem) if p.stem.isdigit() else i for i, p in enumerate(paths)]
        source = FolderFrames(paths, numbers)
        labels = {k: ann_dir / f"{p.stem}.png" for k, p in enumerate(paths)}
        if cfg.num_frames is None:
            windows = [Window(tuple(range(len(paths))), 0)]
        else:
            windows = sliding_windows(len(paths), cfg.num_frames, cfg.stride)
            if not windows:
                self.progress(f"sequence {seq}: {len(paths)} frames, fewer than "
                               f"num_frames={cfg.num_frames}; no snippet")
        return source, labels, windows

    def _example(self, source, window, labels, decode, seq):
        example = make_snippet(source, window, labels, decode, self.builder_config.resize, 0)
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
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        # The name is a folder under the data dir: no separators, no "..", nothing hidden.
        raise ValueError(f"--name={name!r}: a dataset config name is letters, digits, '_', "
                         f"'-' and '.', starting with a letter or digit (it becomes a "
                         f"folder in the data dir)")
    if name is None:
        stem = re.sub(r"[^\w-]", "_", pathlib.Path(cfg.frames).stem or "video")[:40]
        size = f"{cfg.resize[0]}x{cfg.resize[1]}" if cfg.resize else "full"
        name = f"{stem}-t{cfg.num_frames}-{size}-{_config_digest(cfg, _USER_FIELDS)}"
    cfg.name = name
    cfg.description = f"user video {cfg.frames}"
    return cfg


def plan_user_video(cfg: UserVideoConfig, skip: Skip | None = None):
    """(frame source, {position: label path}, windows); a label that matches no frame is
    passed to ``skip`` (what, error) when given, else raised."""
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
                err = BadExample(
                    f"label {path}: no frame {path.stem!r} among the {len(source)} frames "
                    f"read from {frames} (every_nth={cfg.every_nth}, "
                    f"max_frames={cfg.max_frames})", [path])
                if skip is None:
                    raise err
                skip(f"label {path.name}", err)
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


class UserVideo(snippet_builder.SnippetBuilder):
    """A user's frames or video plus optional label PNGs (see the module docstring)."""


    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        fields = {f: getattr(cfg, f) for f in _USER_FIELDS}
        return self.dataset_info_from_configs(
            description=f"Snippets of a user's video; {fields}.",
            features=snippet_builder.snippet_features(cfg.num_frames, cfg.resize),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        self._start()
        return {"full": self._generate_examples("full")}

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        source, labels, windows = plan_user_video(
            cfg, lambda what, error: self._skip(split, what, error))
        meta = self.info.metadata
        meta.update(num_classes=cfg.num_classes, num_source_frames=len(source),
                    fps=getattr(source, "fps", None))
        self.progress(f"{cfg.frames}: {len(source)} frames, {len(labels)} labelled, "
                      f"{len(windows)} snippets to write")
        encoding = LabelEncoding(num_classes=cfg.num_classes)

        def decode(path):
            try:
                return encoding.decode_ids(read_label_ids(path), path)
            except LabelError as e:
                raise BadExample(f"{e}; class ids must be < num_classes="
                                 f"{cfg.num_classes}, or 255 for ignore", [path]) from e

        def items():
            for window in windows:
                source.forget_before(window.positions[0])
                yield window
            source.close()

        def what(window):
            return (f"frames {source.numbers[window.positions[0]]}.."
                    f"{source.numbers[window.positions[-1]]}")

        yield from _numbered(self._write(
            split, items(), lambda w: make_snippet(source, w, labels, decode, cfg.resize, 0),
            what=what, workers=1))


def _numbered(written):
    """(n, example) with ``snippet_id`` n: its position among the snippets written."""
    for n, (_, example) in enumerate(written):
        example["snippet_id"] = np.int64(n)
        yield n, example


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
    builder = make_builder(kind, data_dir, config, skip_bad=skip_bad, progress=progress)
    return snippet_builder.prepare(builder, manual_dir)
