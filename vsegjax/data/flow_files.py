"""The files of the optical-flow datasets: finding them, reading their ground truth.

``find_sintel`` / ``find_flying_chairs`` / ``find_kitti`` list each dataset's snippets as
``SnippetSpec`` (the files of one snippet); ``load_snippet`` reads one into the
``features.py`` format. The layouts are described in ``flow_datasets``, whose builders
write these snippets to TFDS. Missing files raise FileNotFoundError, anything else
unreadable ``BadExample``, both naming the files.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Callable, Iterator

import cv2
import numpy as np

from vsegjax import files
from vsegjax.data import features, flow_io, labels as labels_lib
from vsegjax.data.snippet_builder import BadExample, read_frame

IGNORE_LABEL = labels_lib.IGNORE_LABEL
KITTI_FLOW_OFFSET = 2 ** 15
KITTI_FLOW_SCALE = 64.0
KITTI_LABELS = labels_lib.LabelEncoding(ids=labels_lib.CITYSCAPES_TO_TRAIN,
                                        unknown_to_ignore=True)


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
    frames = [read_frame(p) for p in spec.frames]
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
