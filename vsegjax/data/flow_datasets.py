"""TFDS builders for optical-flow datasets: MPI-Sintel, FlyingChairs, KITTI 2015.

    python data_prep/sintel.py --manual_dir=~/data/MPI-Sintel-complete --data_dir=DIR
    python data_prep/flying_chairs.py --manual_dir=~/data/FlyingChairs_release --data_dir=DIR
    python data_prep/kitti.py --manual_dir=~/data/kitti --data_dir=DIR [--config=semantics]

Every record is a snippet in the ``features.py`` format (frames, labels, has_label,
label_index, snippet_id), plus, for flow configs:

    flow_fwd    float32 [T-1, H, W, 2]  ground-truth flow frame t -> t+1 (0 where unknown)
    occ_fwd     uint8   [T-1, H, W]     1 where a pixel of frame t has no visible match in t+1
    flow_valid  uint8   [T-1, H, W]     1 where flow_fwd is ground truth
    has_flow    bool    [T-1]           whether pair t has ground truth at all

No dataset here has backward flow, so ``flow_bwd``/``occ_bwd`` are absent (not invented).
H and W are stored per record (KITTI sizes differ between scenes). Per dataset:

* ``sintel`` (configs ``clean``, ``final``: pairs; ``clean_t4``, ``final_t4``: 4 frames):
  windows of consecutive frames of each training sequence, ``stride`` frames apart
  (default ``num_frames - 1``: every pair once; up to ``num_frames - 2`` trailing pairs of
  a sequence are dropped). ``occ_fwd`` = ``occlusions/`` PNG (255 -> 1), ``flow_valid`` =
  not ``invalid/`` PNG. Layouts: the official ``training/{clean,final,flow,occlusions,
  invalid}/<seq>/frame_NNNN.*`` (every pair must have ground truth), or extracts with one
  folder per sequence and pass, ``<seq>_<pass>/frame_NNNN.png`` + ``gt/frame_NNNN.flo``,
  ``gt/occlusions/``, ``gt/invalid/``, where pairs without a ``.flo`` get has_flow False
  and windows holding no ground-truth pair are left out.
  ``snippet_id`` = 10000 * (sequence index, sorted by name) + first frame number.
* ``flying_chairs`` (one config): pairs ``NNNNN_img1.ppm``/``NNNNN_img2.ppm`` +
  ``NNNNN_flow.flo`` (official) or ``N-img0.ppm``/``N-img1.ppm`` + ``N-gt.flo``.
  ``occ_fwd`` is 1 where the flow's target lies outside the image (FlyingChairs has no
  occlusion maps; occlusions between chairs are not marked). ``flow_valid`` is all 1.
  ``FlyingChairs_train_val.txt`` (1 = train, 2 = validation, line n for pair n) splits
  official-named pairs into ``train``/``validation``; without it all pairs are ``train``.
* ``kitti_2015`` (TFDS's name ``kitti`` belongs to its object-detection set): config
  ``flow``: ``training/image_2/X_10.png`` -> ``X_11.png`` with ``flow_occ``/``flow_noc``
  16-bit PNGs decoded as in the devkit (R, G, B = u, v, valid; u = (R - 2^15) / 64).
  ``flow_fwd``/``flow_valid`` come from ``flow_occ``; ``occ_fwd`` = 1 where ``flow_occ`` is
  valid but ``flow_noc`` is not (KITTI's "occluded" pixels). When ``semantic/X_10.png``
  exists, frame 0 carries its labels. Config ``semantics``: the 200 ``semantic/`` images
  as one-frame snippets (no flow keys). Labels are Cityscapes ids mapped to the 19 train
  ids (``CITYSCAPES_TO_TRAIN``), everything else 255.

Record ``i`` of a split is ``info.metadata["keys"][split][i]`` (e.g. ``alley_1/frame_0002``).
Bad inputs (unreadable or truncated images/flows, missing ground truth, size mismatches)
raise ``BadExample`` or FileNotFoundError naming the files; with ``skip_bad`` they are
skipped and reported at the end of the split (``builder.skipped``,
``info.metadata["skipped"]``). TFDS writes into ``*.incomplete*`` folders, so an
interrupted build never looks complete.
"""

from __future__ import annotations

import abc

import dataclasses
import logging
import os
import pathlib
import re
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import tensorflow_datasets as tfds

from vsegjax.data import build_utils
from vsegjax.data.build_utils import BadExample
from vsegjax import files
from vsegjax.data import features, flow_io, labels as labels_lib

_Encoding = tfds.features.Encoding
IGNORE_LABEL = 255
KITTI_FLOW_OFFSET = 2 ** 15
KITTI_FLOW_SCALE = 64.0

# Cityscapes label id -> train id (19 classes); every other id is ignored.
CITYSCAPES_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                       23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole",
                      "traffic light", "traffic sign", "vegetation", "terrain", "sky",
                      "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
KITTI_LABELS = labels_lib.LabelEncoding(ids=CITYSCAPES_TO_TRAIN, unknown_to_ignore=True)


# ---------------------------------------------------------------------------------------
# Ground-truth readers
# ---------------------------------------------------------------------------------------

def read_kitti_flow(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Decodes a KITTI flow PNG into (flow float32 [H, W, 2], valid uint8 [H, W]).

    The devkit stores (u, v, valid) as 16-bit (R, G, B): u = (R - 2^15) / 64, likewise v;
    a pixel is valid when B > 0. Invalid pixels get flow 0, as in the devkit.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KITTI flow file not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BadExample(f"{path}: cannot decode the KITTI flow PNG (truncated or corrupt)")
    if raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[-1] != 3:
        raise BadExample(f"{path}: a KITTI flow PNG must be 16-bit with 3 channels (R, G, B "
                         f"= u, v, valid); got {raw.dtype} {raw.shape}")
    valid = raw[..., 0] > 0  # OpenCV reads BGR: channel 0 is B = valid
    flow = (raw[..., [2, 1]].astype(np.float32) - KITTI_FLOW_OFFSET) / KITTI_FLOW_SCALE
    flow[~valid] = 0.0
    return flow, valid.astype(np.uint8)


def encode_kitti_flow(flow: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The uint16 [H, W, 3] BGR array that ``cv2.imwrite`` stores as a KITTI flow PNG.

    As the devkit: values clamped to [0, 65535] and truncated; invalid pixels are (0, 0, 0).
    """
    flow = np.asarray(flow, np.float64)
    valid = np.ones(flow.shape[:2], bool) if valid is None else np.asarray(valid) > 0
    stored = np.clip(flow * KITTI_FLOW_SCALE + KITTI_FLOW_OFFSET, 0, 65535).astype(np.uint16)
    out = np.zeros(flow.shape[:2] + (3,), np.uint16)
    out[..., 0] = valid
    out[..., 1] = np.where(valid, stored[..., 1], 0)
    out[..., 2] = np.where(valid, stored[..., 0], 0)
    return out


def write_kitti_flow(path: str | os.PathLike, flow: np.ndarray,
                     valid: np.ndarray | None = None) -> None:
    """Writes a KITTI flow PNG (e.g. a prediction for the benchmark), atomically."""
    ok, png = cv2.imencode(".png", encode_kitti_flow(flow, valid))
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the flow PNG")
    files.atomic_write_bytes(path, png.tobytes())


def out_of_image(flow: np.ndarray) -> np.ndarray:
    """uint8 [H, W]: 1 where (x + u, y + v) lies outside [0, W-1] x [0, H-1]."""
    h, w = flow.shape[:2]
    tx = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    ty = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    return ((tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)).astype(np.uint8)


def _read(reader: Callable, path: pathlib.Path, what: str):
    """Calls ``reader(path)``; missing files stay FileNotFoundError, others become BadExample."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return reader(path)
    except BadExample:
        raise
    except (OSError, ValueError) as e:
        raise BadExample(f"{path}: cannot read the {what}: {e}") from e


def _read_binary_mask(path: pathlib.Path) -> np.ndarray:
    return (flow_io.read_mask(path) > 127).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Snippet specs (lists of files) and loading
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PairGT:
    """Ground truth of one pair: kind "sintel" (flo, occlusions, invalid), "chairs" (flo)
    or "kitti" (flow_occ, flow_noc)."""

    kind: str
    paths: tuple[pathlib.Path, ...]


@dataclasses.dataclass(frozen=True)
class SnippetSpec:
    """The files of one snippet. ``pairs`` is None for snippets without flow keys."""

    key: str
    snippet_id: int
    frames: tuple[pathlib.Path, ...]
    pairs: tuple[PairGT | None, ...] | None
    labels: tuple[pathlib.Path | None, ...] | None = None

    @property
    def files(self) -> list[str]:
        out = [str(p) for p in self.frames]
        for gt in self.pairs or ():
            out += [str(p) for p in gt.paths] if gt else []
        out += [str(p) for p in self.labels or () if p is not None]
        return out


def _size(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}"


def _read_pair_gt(gt: PairGT, size: tuple[int, int], frame: pathlib.Path):
    """(flow, valid, occ) of one pair, checked against the frame size."""
    if gt.kind == "sintel":
        flo, occ_png, invalid_png = gt.paths
        flow = _read(flow_io.read_flo, flo, "Sintel flow")
        occ = _read(_read_binary_mask, occ_png, "Sintel occlusion mask")
        valid = 1 - _read(_read_binary_mask, invalid_png, "Sintel invalid mask")
        arrays = ((flo, flow), (occ_png, occ), (invalid_png, valid))
    elif gt.kind == "chairs":
        flo, = gt.paths
        flow = _read(flow_io.read_flo, flo, "FlyingChairs flow")
        valid = np.ones(flow.shape[:2], np.uint8)
        occ = out_of_image(flow)
        arrays = ((flo, flow),)
    elif gt.kind == "kitti":
        occ_png, noc_png = gt.paths
        flow, valid = _read(read_kitti_flow, occ_png, "KITTI flow_occ")
        _, valid_noc = _read(read_kitti_flow, noc_png, "KITTI flow_noc")
        occ = (valid > 0) & (valid_noc == 0)
        arrays = ((occ_png, flow), (noc_png, valid_noc))
    else:
        raise ValueError(f"unknown ground-truth kind {gt.kind!r}")
    for path, array in arrays:
        if array.shape[:2] != size:
            raise BadExample(f"size mismatch: ground truth {path} is {_size(array)} but frame "
                             f"{frame} is {size[1]}x{size[0]} (width x height)")
    return flow.astype(np.float32), valid.astype(np.uint8), occ.astype(np.uint8)


def load_snippet(spec: SnippetSpec, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Reads the files of ``spec`` into a snippet dict (see the module docstring).

    Raises FileNotFoundError (missing file) or BadExample (anything else), naming files.
    """
    frames = [_read(flow_io.read_image, p, "image") for p in spec.frames]
    size = frames[0].shape[:2]
    if any(f.shape[:2] != size for f in frames):
        sizes = ", ".join(f"{p} is {_size(f)}" for p, f in zip(spec.frames, frames))
        raise BadExample(f"frames of one snippet differ in size: {sizes} (width x height)")
    t = len(frames)
    labels = np.full((t,) + size, IGNORE_LABEL, np.uint8)
    has_label = np.zeros(t, bool)
    for i, path in enumerate(spec.labels or ()):
        if path is None:
            continue
        label = _read(KITTI_LABELS.decode, path, "semantic label")
        if label.shape != size:
            raise BadExample(f"size mismatch: label {path} is {_size(label)} but frame "
                             f"{spec.frames[i]} is {size[1]}x{size[0]} (width x height)")
        labels[i], has_label[i] = label, True
    example = {
        "frames": np.stack(frames),
        "labels": labels,
        "has_label": has_label,
        "label_index": np.int32(int(np.argmax(has_label)) if has_label.any() else 0),
        "snippet_id": np.int64(spec.snippet_id),
    }
    if spec.pairs is not None:
        flow = np.zeros((t - 1,) + size + (2,), np.float32)
        valid = np.zeros((t - 1,) + size, np.uint8)
        occ = np.zeros((t - 1,) + size, np.uint8)
        has_flow = np.zeros(t - 1, bool)
        for i, gt in enumerate(spec.pairs):
            if gt is not None:
                flow[i], valid[i], occ[i] = _read_pair_gt(gt, size, spec.frames[i])
                has_flow[i] = True
        example.update(flow_fwd=flow, occ_fwd=occ, flow_valid=valid, has_flow=has_flow)
    try:
        features.validate_snippet(example, num_classes, where=f"snippet {spec.key}")
    except ValueError as e:
        raise BadExample(f"{e} (files: {', '.join(spec.files)})") from e
    return example


# ---------------------------------------------------------------------------------------
# Finding the files of each dataset
# ---------------------------------------------------------------------------------------

Report = Callable[[str, Exception], None]  # (key, error): raise it or record a skip

SINTEL_PASSES = ("clean", "final")
SINTEL_EXPECTED = (
    "expected MPI-Sintel: training/{clean,final,flow,occlusions,invalid}/<sequence>/"
    "frame_NNNN.{png,flo} (the MPI-Sintel-complete folder or its training/ folder), or one "
    "folder per sequence and pass, <sequence>_<pass>/frame_NNNN.png with gt/frame_NNNN.flo, "
    "gt/occlusions/frame_NNNN.png and gt/invalid/frame_NNNN.png")
CHAIRS_EXPECTED = (
    "expected FlyingChairs: NNNNN_img1.ppm, NNNNN_img2.ppm, NNNNN_flow.flo (the "
    "FlyingChairs_release folder, its data/ folder, or a folder holding it) or N-img0.ppm, "
    "N-img1.ppm, N-gt.flo; optionally FlyingChairs_train_val.txt")
KITTI_EXPECTED = (
    "expected KITTI 2015: training/image_2/NNNNNN_10.png + NNNNNN_11.png, training/flow_occ/"
    "NNNNNN_10.png, training/flow_noc/NNNNNN_10.png (data_scene_flow) and, for semantics, "
    "training/semantic/NNNNNN_10.png + training/image_2/NNNNNN_10.png (data_semantics); "
    "the manual dir may hold training/ itself or data_scene_flow/ and data_semantics/")

_FRAME = re.compile(r"^frame_(\d+)\.png$")


def _numbered_frames(folder: pathlib.Path) -> dict[int, pathlib.Path]:
    frames = {}
    for p in folder.iterdir():
        m = _FRAME.match(p.name)
        if m:
            frames[int(m.group(1))] = p
    return frames


def _windows(numbers: list[int], num_frames: int, stride: int, folder: pathlib.Path,
             report: Report) -> Iterator[list[int]]:
    """Windows of ``num_frames`` consecutive frame numbers; a gap is reported (a missing
    frame file) and no window crosses it."""
    run: list[int] = []
    for n in numbers:
        if run and n != run[-1] + 1:
            report(f"{folder.name}/frame_{run[-1] + 1:04d}", FileNotFoundError(
                f"{folder}: frame file frame_{run[-1] + 1:04d}.png is missing (frame "
                f"numbers jump from {run[-1]} to {n})"))
            yield from _run_windows(run, num_frames, stride)
            run = []
        run.append(n)
    yield from _run_windows(run, num_frames, stride)


def _run_windows(run: list[int], num_frames: int, stride: int) -> Iterator[list[int]]:
    for start in range(0, len(run) - num_frames + 1, stride):
        yield run[start:start + num_frames]


def find_sintel(root: pathlib.Path, pass_name: str, num_frames: int, stride: int,
                report: Report) -> dict[str, list[SnippetSpec]]:
    """The ``train`` snippets of one pass (see the module docstring for the layouts)."""
    if pass_name not in SINTEL_PASSES:
        raise ValueError(f"Sintel pass must be one of {SINTEL_PASSES}; got {pass_name!r}")
    training = root / "training" if (root / "training").is_dir() else root
    official = any((training / d).is_dir() for d in SINTEL_PASSES + ("flow",))
    sequences = []  # (name, frame folder, gt(frame stem) -> PairGT | None)
    if official:
        pass_dir = training / pass_name
        if not pass_dir.is_dir():
            raise FileNotFoundError(f"Sintel {pass_name} pass folder {pass_dir} not found; "
                                    f"{SINTEL_EXPECTED}")
        for seq in sorted(p for p in pass_dir.iterdir() if p.is_dir()):
            def gt(stem, seq=seq.name):
                return PairGT("sintel", (training / "flow" / seq / f"{stem}.flo",
                                         training / "occlusions" / seq / f"{stem}.png",
                                         training / "invalid" / seq / f"{stem}.png"))
            sequences.append((seq.name, seq, gt))
    else:
        suffix = f"_{pass_name}"
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if not folder.name.endswith(suffix) or not _numbered_frames(folder):
                continue
            def gt(stem, folder=folder):
                flo = folder / "gt" / f"{stem}.flo"
                if not flo.is_file():
                    return None  # extracts hold ground truth for some pairs only
                return PairGT("sintel", (flo, folder / "gt" / "occlusions" / f"{stem}.png",
                                         folder / "gt" / "invalid" / f"{stem}.png"))
            sequences.append((folder.name[:-len(suffix)], folder, gt))
    if not sequences:
        found = sorted(p.name for p in root.iterdir())[:20]
        raise FileNotFoundError(f"no Sintel {pass_name} sequences in {root} (found {found}); "
                                f"{SINTEL_EXPECTED}")
    specs = []
    for index, (name, folder, gt) in enumerate(sequences):
        frames = _numbered_frames(folder)
        for window in _windows(sorted(frames), num_frames, stride, folder, report):
            paths = tuple(frames[n] for n in window)
            pairs = tuple(gt(p.stem) for p in paths[:-1])
            if all(pair is None for pair in pairs):
                continue
            specs.append(SnippetSpec(f"{name}/{paths[0].stem}", 10000 * index + window[0],
                                     paths, pairs))
    return {"train": specs}


_CHAIRS_NAMING = (  # (first image, second image, flow) names of pair N
    ("{}_img1.ppm", "{}_img2.ppm", "{}_flow.flo"),  # official FlyingChairs_release/data
    ("{}-img0.ppm", "{}-img1.ppm", "{}-gt.flo"),
)
CHAIRS_SPLIT_FILE = "FlyingChairs_train_val.txt"


def _chairs_pairs(root: pathlib.Path):
    """(folder, naming index, sorted pair numbers) of the first folder holding pairs."""
    for folder in (root, root / "data", root / "FlyingChairs_release" / "data"):
        if not folder.is_dir():
            continue
        names = os.listdir(folder)
        for index, (first, _, _) in enumerate(_CHAIRS_NAMING):
            pattern = re.compile("^" + re.escape(first).replace(re.escape("{}"), r"(\d+)")
                                 + "$")
            numbers = sorted(m.group(1) for m in map(pattern.match, names) if m)
            if numbers:
                return folder, index, numbers
    raise FileNotFoundError(f"no FlyingChairs pairs in {root}; {CHAIRS_EXPECTED}")


def find_flying_chairs(root: pathlib.Path, report: Report) -> dict[str, list[SnippetSpec]]:
    """``train`` (and ``validation`` when the split file is present) pairs."""
    del report  # every problem is found when reading a pair
    folder, naming, numbers = _chairs_pairs(root)
    first, second, flo = _CHAIRS_NAMING[naming]
    specs = [SnippetSpec(n, int(n), (folder / first.format(n), folder / second.format(n)),
                         (PairGT("chairs", (folder / flo.format(n),)),)) for n in numbers]
    candidates = (root, folder, folder.parent, root / "FlyingChairs_release")
    split_file = next((d / CHAIRS_SPLIT_FILE for d in candidates
                       if (d / CHAIRS_SPLIT_FILE).is_file()), None)
    if split_file is None or naming != 0:  # the split file numbers official pairs from 1
        return {"train": specs}
    marks = split_file.read_text().split()
    splits = {"train": [], "validation": []}
    for spec in specs:
        line = spec.snippet_id - 1
        if not 0 <= line < len(marks) or marks[line] not in ("1", "2"):
            raise ValueError(f"{split_file}: no train/validation mark (1 or 2) on line "
                             f"{line + 1} for pair {spec.key} ({len(marks)} lines)")
        splits["train" if marks[line] == "1" else "validation"].append(spec)
    return {k: v for k, v in splits.items() if v}


def _kitti_training(root: pathlib.Path, marker: str) -> pathlib.Path | None:
    for base in (root, root / "data_scene_flow", root / "data_semantics"):
        for training in (base / "training", base):
            if (training / marker).is_dir():
                return training
    return None


def find_kitti(root: pathlib.Path, kind: str, report: Report) -> dict[str, list[SnippetSpec]]:
    """``train`` snippets of config ``kind`` ("flow" or "semantics")."""
    del report  # every problem is found when reading a snippet
    semantic_root = _kitti_training(root, "semantic")
    if kind == "flow":
        training = _kitti_training(root, "flow_occ")
    elif kind == "semantics":
        training = semantic_root
    else:
        raise ValueError(f"KITTI config kind must be 'flow' or 'semantics'; got {kind!r}")
    images = training / "image_2" if training else None
    if images is None or not images.is_dir():
        what = "training/flow_occ" if kind == "flow" else "training/semantic"
        raise FileNotFoundError(f"no KITTI {what} + training/image_2 in {root}; "
                                f"{KITTI_EXPECTED}")
    stems = sorted(p.name[:-len("_10.png")] for p in images.glob("*_10.png"))
    if not stems:
        raise FileNotFoundError(f"no KITTI images NNNNNN_10.png in {images}; {KITTI_EXPECTED}")
    specs = []
    for stem in stems:
        semantic = semantic_root / "semantic" / f"{stem}_10.png" if semantic_root else None
        if kind == "flow":
            pairs = (PairGT("kitti", (training / "flow_occ" / f"{stem}_10.png",
                                      training / "flow_noc" / f"{stem}_10.png")),)
            labels = (semantic if semantic and semantic.is_file() else None, None)
            frames = (images / f"{stem}_10.png", images / f"{stem}_11.png")
        else:
            pairs, labels, frames = None, (semantic,), (images / f"{stem}_10.png",)
        specs.append(SnippetSpec(stem, int(stem), frames, pairs, labels))
    return {"train": specs}


# ---------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------

def format_report(name: str, skipped: dict[str, list[tuple[str, str]]]) -> str:
    """Skipped snippets: the count, then one line per snippet with the reason."""
    return build_utils.format_report(name, skipped, what="snippet")


LISTING = "listing"  # the "split" of problems found while listing files


class _SnippetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared machinery: ArrayRecord, record order = list order, skip_bad, thread pool."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    EXPECTED = ""
    HOMEPAGE = ""
    CITATION = ""

    def __init__(self, *, skip_bad: bool = False, num_workers: int | None = None, **kwargs):
        super().__init__(file_format="array_record", **kwargs)
        self.skip_bad = skip_bad
        self.num_workers = num_workers if num_workers is not None else min(
            8, os.cpu_count() or 1)
        # split -> [(snippet key, reason)] skipped in the last build.
        self.skipped: dict[str, list[tuple[str, str]]] = {}

    # Subclasses define these.
    @abc.abstractmethod
    def _num_frames(self) -> int:
        """Frames per snippet."""

    def _with_flow(self) -> bool:
        return True

    def _num_classes(self) -> int | None:
        return None

    @abc.abstractmethod
    def _description(self) -> str:
        """The dataset description for its DatasetInfo."""

    @abc.abstractmethod
    def _find(self, root: pathlib.Path, report: Report) -> dict[str, list[SnippetSpec]]:
        """split -> the snippets found under the manual folder ``root``."""

    def _info(self) -> tfds.core.DatasetInfo:
        t = self._num_frames()

        def tensor(shape, dtype, encoding=_Encoding.BYTES):
            return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=encoding)

        feats = {
            "frames": tensor((t, None, None, 3), np.uint8),
            "labels": tensor((t, None, None), np.uint8, _Encoding.ZLIB),
            "has_label": tensor((t,), np.bool_),
            "label_index": tfds.features.Scalar(np.int32),
            "snippet_id": tfds.features.Scalar(np.int64),
        }
        if self._with_flow():
            feats.update({
                "flow_fwd": tensor((t - 1, None, None, 2), np.float32, _Encoding.ZLIB),
                "occ_fwd": tensor((t - 1, None, None), np.uint8, _Encoding.ZLIB),
                "flow_valid": tensor((t - 1, None, None), np.uint8, _Encoding.ZLIB),
                "has_flow": tensor((t - 1,), np.bool_),
            })
        return self.dataset_info_from_configs(
            description=self._description(),
            features=tfds.features.FeaturesDict(feats),
            supervised_keys=None,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            metadata=tfds.core.MetadataDict(),
            # Record i is the i-th good snippet of the list, the same on every read.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        try:
            root = pathlib.Path(dl_manager.manual_dir)
        except AssertionError as e:  # TFDS: "Manual directory ... does not exist or is empty"
            raise FileNotFoundError(f"{self.name}: {e}") from e
        self.skipped = {}
        self.info.metadata["keys"] = {}
        self.info.metadata["skipped"] = {}
        splits = self._find(root, self._reporter(LISTING))
        if self.skipped:
            self.info.metadata["skipped"][LISTING] = [list(s) for s in self.skipped[LISTING]]
            print(format_report(f"{self.name}/{self.builder_config.name}", self.skipped),
                  flush=True)
        if not any(splits.values()):
            raise FileNotFoundError(f"{self.name}/{self.builder_config.name}: no snippets "
                                    f"found in {root}; {self.EXPECTED}")
        return {split: self._generate_examples(split, specs) for split, specs in splits.items()}

    def _reporter(self, split: str) -> Report:
        def report(key: str, error: Exception):
            if not self.skip_bad:
                error.add_note("(build with skip_bad=True / --skip_bad to skip bad snippets)")
                raise error
            logging.warning("%s %s: skipping %s: %s", self.name, split, key, error)
            self.skipped.setdefault(split, []).append((key, str(error)))
        return report

    def _generate_examples(self, split: str, specs: list[SnippetSpec]):
        report = self._reporter(split)
        keys = self.info.metadata["keys"].setdefault(split, [])
        num_classes = self._num_classes()
        for spec, result in build_utils.bounded_map(
                lambda s: _load(s, num_classes), specs, self.num_workers,
                window=4 * max(1, self.num_workers), catch=(BadExample, FileNotFoundError)):
            if isinstance(result, Exception):
                report(spec.key, result)
                continue
            keys.append(spec.key)
            yield spec.key, result
        skipped = self.skipped.get(split, [])
        self.info.metadata["skipped"][split] = [list(s) for s in skipped]
        if skipped:
            print(format_report(f"{self.name}/{self.builder_config.name}", {split: skipped}),
                  flush=True)
        if not keys:
            raise BadExample(f"{self.name} {split}: all {len(specs)} snippets were bad; "
                             f"nothing to write")


def _load(spec: SnippetSpec, num_classes: int | None):
    # Looked up at call time so tests can patch ``load_snippet``.
    return load_snippet(spec, num_classes)


@dataclasses.dataclass(eq=False)
class SintelConfig(tfds.core.BuilderConfig):
    """pass_name: "clean" or "final"; num_frames per snippet; stride between window
    starts (None: num_frames - 1, so consecutive snippets share one frame)."""

    pass_name: str = "clean"
    num_frames: int = 2
    stride: int | None = None


def sintel_config(pass_name: str = "clean", num_frames: int = 2,
                  stride: int | None = None) -> SintelConfig:
    """A Sintel config; its name encodes the options ("clean", "final_t4", "clean_t3s1")."""
    if pass_name not in SINTEL_PASSES:
        raise ValueError(f"Sintel pass_name must be one of {SINTEL_PASSES}; got {pass_name!r}")
    if not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"Sintel num_frames must be an integer >= 2; got {num_frames!r}")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise ValueError(f"Sintel stride must be an integer >= 1 or None; got {stride!r}")
    if stride == num_frames - 1:
        stride = None
    name = pass_name + (f"_t{num_frames}" if num_frames != 2 else "")
    if stride is not None:
        name += f"s{stride}"
    if name in _SINTEL_CONFIGS:  # TFDS refuses a second config of a registered name
        return _SINTEL_CONFIGS[name]
    return SintelConfig(name=name, pass_name=pass_name, num_frames=num_frames, stride=stride,
                        description=f"{pass_name} pass, {num_frames} frames per snippet")


_SINTEL_CONFIGS: dict[str, SintelConfig] = {}
for _pass in SINTEL_PASSES:
    for _t in (2, 4):
        _cfg = sintel_config(_pass, _t)
        _SINTEL_CONFIGS[_cfg.name] = _cfg


class Sintel(_SnippetBuilder):
    """MPI-Sintel training sequences as snippets with forward flow, occlusion and validity."""

    name = "sintel"
    BUILDER_CONFIGS = list(_SINTEL_CONFIGS.values())  # clean, clean_t4, final, final_t4
    DEFAULT_CONFIG_NAME = "clean"
    EXPECTED = SINTEL_EXPECTED
    MANUAL_DOWNLOAD_INSTRUCTIONS = SINTEL_EXPECTED + " (http://sintel.is.tue.mpg.de/)."
    HOMEPAGE = "http://sintel.is.tue.mpg.de/"
    CITATION = ("Butler, Wulff, Stanley, Black. A naturalistic open source movie for optical "
                "flow evaluation. ECCV 2012.")

    def _num_frames(self):
        return self.builder_config.num_frames

    def _description(self):
        cfg = self.builder_config
        return (f"MPI-Sintel {cfg.pass_name} pass, {cfg.num_frames}-frame snippets; occ_fwd "
                f"from occlusions/, flow_valid = not invalid/.")

    def _find(self, root, report):
        cfg = self.builder_config
        stride = cfg.stride if cfg.stride is not None else cfg.num_frames - 1
        return find_sintel(root, cfg.pass_name, cfg.num_frames, stride, report)


class FlyingChairs(_SnippetBuilder):
    """FlyingChairs pairs with forward flow; occ_fwd = flow target outside the image."""

    name = "flying_chairs"
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default", description="all pairs")]
    EXPECTED = CHAIRS_EXPECTED
    MANUAL_DOWNLOAD_INSTRUCTIONS = CHAIRS_EXPECTED + (
        " (https://lmb.informatik.uni-freiburg.de/resources/datasets/FlyingChairs.en.html).")
    HOMEPAGE = "https://lmb.informatik.uni-freiburg.de/resources/datasets/FlyingChairs.en.html"
    CITATION = ("Dosovitskiy et al. FlowNet: Learning optical flow with convolutional "
                "networks. ICCV 2015.")

    def _num_frames(self):
        return 2

    def _description(self):
        return ("FlyingChairs pairs; occ_fwd = 1 where the flow target leaves the image "
                "(no occlusion ground truth); flow_valid all 1.")

    def _find(self, root, report):
        return find_flying_chairs(root, report)


@dataclasses.dataclass(eq=False)
class KittiConfig(tfds.core.BuilderConfig):
    kind: str = "flow"  # "flow" or "semantics"


class Kitti(_SnippetBuilder):
    """KITTI 2015: flow pairs (``flow``) or the 200 semantic images (``semantics``)."""

    name = "kitti_2015"  # "kitti" is TFDS' own object-detection dataset
    BUILDER_CONFIGS = [
        KittiConfig(name="flow", kind="flow", description="image_2 _10 -> _11 with flow"),
        KittiConfig(name="semantics", kind="semantics",
                    description="the 200 semantic images, 19 Cityscapes train ids"),
    ]
    DEFAULT_CONFIG_NAME = "flow"
    EXPECTED = KITTI_EXPECTED
    MANUAL_DOWNLOAD_INSTRUCTIONS = KITTI_EXPECTED + (
        " (https://www.cvlibs.net/datasets/kitti/eval_scene_flow.php).")
    HOMEPAGE = "https://www.cvlibs.net/datasets/kitti/eval_scene_flow.php"
    CITATION = ("Menze, Geiger. Object scene flow for autonomous vehicles. CVPR 2015. "
                "Alhaija et al. Augmented reality meets computer vision. IJCV 2018.")

    def _num_frames(self):
        return 2 if self.builder_config.kind == "flow" else 1

    def _with_flow(self):
        return self.builder_config.kind == "flow"

    def _num_classes(self):
        return len(CITYSCAPES_CLASSES)

    def _description(self):
        return (f"KITTI 2015 {self.builder_config.kind}; labels: Cityscapes ids -> 19 train "
                f"ids {list(CITYSCAPES_CLASSES)}, others 255. flow_fwd/flow_valid from "
                f"flow_occ; occ_fwd = valid in flow_occ but not in flow_noc.")

    def _find(self, root, report):
        return find_kitti(root, self.builder_config.kind, report)


BUILDERS = {cls.name: cls for cls in (Sintel, FlyingChairs, Kitti)}


def make_builder(name: str, data_dir: str, config: str | tfds.core.BuilderConfig | None = None,
                 **kwargs) -> _SnippetBuilder:
    """The builder ``name`` ("sintel", "flying_chairs", "kitti_2015") for ``config``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown flow dataset {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](config=config, data_dir=os.path.expanduser(data_dir), **kwargs)


def build(name: str, data_dir: str, manual_dir: str | os.PathLike,
          config: str | tfds.core.BuilderConfig | None = None, *, skip_bad: bool = False,
          num_workers: int | None = None) -> _SnippetBuilder:
    """Builds ``name``/``config`` from the raw files in ``manual_dir`` unless already built."""
    builder = make_builder(name, data_dir, config, skip_bad=skip_bad, num_workers=num_workers)
    if builder.is_prepared():
        return builder
    manual = pathlib.Path(os.path.expanduser(os.fspath(manual_dir)))
    if not manual.is_dir() or not any(manual.iterdir()):
        state = "does not exist" if not manual.exists() else (
            "is not a folder" if not manual.is_dir() else "is empty")
        raise FileNotFoundError(f"{name}: manual dir {manual} {state}; {builder.EXPECTED}")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder
