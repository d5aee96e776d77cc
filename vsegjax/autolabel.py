"""Auto-label a user's video from a few labelled frames.

    python -m vsegjax.autolabel --frames=DIR --labels=DIR --out=DIR --method=flow \
        --num_classes=C [--flow=dis|farneback|<FlowNetS run>] [--max_side=320]
        [--min_confidence=0.0] [--refiner=<run>] [--train_steps=300] [--sdc=<run>]
        [--prior=segmenter|none] [--strides=1] [--warp_weight=0.0]

``--frames`` holds the video's frames sorted by file name (PNG / JPEG); ``--labels`` holds
class-id PNGs (255 = ignore) for some of them, with the same file stems. Every frame gets
``<out>/labels/<stem>.png`` (class ids; pixels under ``--min_confidence`` are 255),
``<out>/overlay/<stem>.jpg`` (colour preview) and ``<out>/confidence/<stem>.png`` (0-255),
plus ``<out>/autolabel.json``. Each frame is labelled from its nearest labelled frame:

  copy         the label as it is (no motion)
  flow         the label moved along composed optical flow (``--flow``)
  sdc          the same with a trained video-reconstruction model's motion (``--sdc``)
  warp_refine  warped and refined step by step (Warp-Refine); the refiner is trained on
               these frames by cycle consistency (``--train_steps``) unless ``--refiner``

Input folders are only read. Labelled frames keep their label; the rest is computed at
``--max_side`` and resized back to each frame's size.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Any

import cv2
import numpy as np
import tqdm

from vsegjax import files, viz
from vsegjax.data.frame_sources import list_images, read_frame, read_label_ids
from vsegjax.data.snippet_builder import BadExample
from vsegjax.models import propagate as prop
from vsegjax.methods.warp_refine import video as wr
from vsegjax.methods.warp_refine.losses import label_probs
from vsegjax.models.flow_providers import make_flow_provider
from vsegjax.methods.warp_refine.model import warp_probs
from vsegjax.methods.vplr.sdc import load_sdc_flow

METHODS = ("copy", "flow", "sdc", "warp_refine")
IGNORE = 255


class AutolabelError(ValueError):
    """Bad input; the message names the file or flag at fault."""


def _read_inputs(frames_dir: str, labels_dir: str, num_classes: int):
    try:
        frame_paths = list_images(frames_dir, "--frames", suffixes=(".png", ".jpg", ".jpeg"))
        label_paths = list_images(labels_dir, "--labels", suffixes=(".png",))
    except FileNotFoundError as e:
        raise AutolabelError(str(e)) from None
    index = {p.stem: i for i, p in enumerate(frame_paths)}
    frames = []
    for p in tqdm.tqdm(frame_paths, desc="read frames", unit="frame", leave=False):
        try:
            frames.append(read_frame(p))
        except BadExample as e:
            raise AutolabelError(f"unreadable frame: {e}") from None
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        raise AutolabelError(f"--frames: frames differ in size {sorted(sizes)} (first "
                             f"{frame_paths[0].name}: {frames[0].shape[:2]})")
    labels = {}
    for p in label_paths:
        if p.stem not in index:
            raise AutolabelError(f"label {p} has no frame with the stem {p.stem!r} in "
                                 f"{frames_dir}")
        try:
            lab = read_label_ids(p)
        except BadExample as e:
            raise AutolabelError(f"unreadable label: {e}") from None
        t = index[p.stem]
        if lab.shape != frames[t].shape[:2]:
            raise AutolabelError(f"label {p} is {lab.shape[1]}x{lab.shape[0]} but its frame "
                                 f"{frame_paths[t]} is {frames[t].shape[1]}x"
                                 f"{frames[t].shape[0]} (width x height)")
        bad = np.unique(lab[(lab >= num_classes) & (lab != IGNORE)])
        if bad.size:
            raise AutolabelError(f"label {p} has ids {bad.tolist()[:8]} outside "
                                 f"0..{num_classes - 1} (--num_classes={num_classes}; 255 = "
                                 f"ignore)")
        labels[t] = lab
    if not labels:
        raise AutolabelError(f"--labels: no label PNG in {labels_dir}")
    return frame_paths, np.stack(frames), labels


def _strides(text: str) -> tuple[int, ...]:
    try:
        strides = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        strides = ()
    if not strides or min(strides) < 1:
        raise AutolabelError(f"--strides={text}: give positive integers, e.g. 1,2,3")
    return strides


OUTPUT_DIRS = ("labels", "overlay", "confidence", "refiner")


def check_out(out: str, inputs: dict[str, str]) -> pathlib.Path:
    """The resolved ``--out``, refused when anything written there would touch an input.

    ``inputs`` maps a flag (``--frames``) to its folder. ``--out`` may hold the inputs
    (``--out=clip`` for ``clip/frames``), but it may not be or lie inside one, and none of
    its output folders (``OUTPUT_DIRS``) may be or hold one: ``clip/labels`` as
    ``--labels`` with ``--out=clip`` would have its labels rewritten. Also refused before
    any work: an ``--out`` that is a file or cannot be created or written.
    """
    out_p = pathlib.Path(out).expanduser().resolve()
    for flag, folder in inputs.items():
        d_p = pathlib.Path(folder).expanduser().resolve()
        if out_p == d_p or d_p in out_p.parents:
            raise AutolabelError(f"--out {out_p} lies inside the {flag} folder {d_p}; choose "
                                 f"another folder (inputs are never written)")
        for sub in OUTPUT_DIRS:
            written = out_p / sub
            if written == d_p or written in d_p.parents:
                raise AutolabelError(f"--out {out_p}: autolabel writes {written}/, which "
                                     f"{'is' if written == d_p else 'holds'} the {flag} folder "
                                     f"{d_p}; choose another --out (inputs are never written)")
    if out_p.exists() and not out_p.is_dir():
        raise AutolabelError(f"--out {out_p} is an existing file; give a folder")
    for sub in OUTPUT_DIRS[:3]:
        if (out_p / sub).exists() and not (out_p / sub).is_dir():
            raise AutolabelError(f"--out {out_p}: {out_p / sub} is a file where autolabel "
                                 f"writes a folder")
    existing = next(p for p in (out_p, *out_p.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise AutolabelError(f"--out {out_p}: cannot write in {existing} (permission denied)")
    return out_p


def flow_source(spec: str):
    """'dis' / 'farneback', or a FlowNetS run (the flow provider reads the architecture
    from its config.json, see vsegjax.models.flownet_checkpoint)."""
    if spec in ("dis", "farneback"):
        return spec
    path = pathlib.Path(spec).expanduser()
    if not path.exists():
        raise AutolabelError(f"--flow={spec}: not 'dis', 'farneback' or an existing FlowNetS "
                             f"checkpoint / run folder")
    try:
        return make_flow_provider({"source": "flownet", "checkpoint": str(path)})
    except ValueError as e:
        raise AutolabelError(f"--flow={spec}: {e}") from None


def flow_confidence(num_frames: int, anchors: dict[int, np.ndarray], flows,
                    num_classes: int) -> dict[int, np.ndarray]:
    """Confidence of flow propagation: the one-hot label warped bilinearly along the same
    composed flow; its max is < 1 where neighbouring source pixels disagree (boundaries)."""
    import jax.numpy as jnp
    conf = {}
    for anchor, targets in prop.assign_anchors(num_frames, anchors).items():
        onehot = label_probs(jnp.asarray(anchors[anchor]), num_classes)
        for t, f in prop.flows_to_anchor(anchor, *flows, targets).items():
            p = warp_probs(onehot[None], jnp.asarray(f)[None])[0]
            conf[t] = np.asarray(jnp.max(p, -1))
    return conf


def autolabel(frames_dir: str, labels_dir: str, out: str, method: str, num_classes: int,
              flow: str = "dis", max_side: int | None = 320, min_confidence: float = 0.0,
              refiner: str | None = None, train_steps: int = 300, sdc: str | None = None,
              k: int = 3, seed: int = 0, prior: str = "segmenter",
              strides: tuple[int, ...] = (1,), warp_weight: float = 0.0) -> dict[str, Any]:
    """Labels every frame (see the module doc); returns the summary written as JSON."""

    if method not in METHODS:
        raise AutolabelError(f"--method={method}: choose from {list(METHODS)}")
    if num_classes < 1 or num_classes > 255:
        raise AutolabelError(f"--num_classes={num_classes}: must be in 1..255")
    if not 0.0 <= min_confidence <= 1.0:
        raise AutolabelError(f"--min_confidence={min_confidence}: must be in [0, 1]")
    out_p = check_out(out, {"--frames": frames_dir, "--labels": labels_dir})
    t0 = time.time()
    # Every model argument is loaded before the frames are read or any flow computed, so
    # a bad one fails at once.
    if method == "copy":
        source: Any = "copy"
    elif method == "sdc":
        if not sdc:
            raise AutolabelError("--method=sdc needs --sdc=<run folder of a trained "
                                 "video reconstruction model (configs/sdc_synthetic.py)>")
        try:
            source = load_sdc_flow(sdc)
        except (ValueError, FileNotFoundError) as e:
            raise AutolabelError(f"--sdc={sdc}: {e}") from None
    else:
        source = flow_source(flow)
    if method == "warp_refine" and refiner:
        try:
            task, variables = wr.load_refiner(refiner, num_classes)
        except (ValueError, FileNotFoundError) as e:
            raise AutolabelError(str(e)) from None
    paths, frames_u8, labels_full = _read_inputs(frames_dir, labels_dir, num_classes)
    full_h, full_w = frames_u8.shape[1:3]
    frames_u8, labels = prop.resize_video(frames_u8, labels_full, max_side)
    frames = frames_u8.astype(np.float32) / 255.0
    h, w = frames.shape[1:3]
    print(f"flow ({method}) on {len(frames)} frames at {w}x{h} ...", file=sys.stderr)
    flows = prop.video_flows(frames, source)

    if method == "warp_refine":
        if not refiner:
            try:
                task, variables = wr.train_on_video(
                    frames, labels, num_classes, flows, str(out_p), steps=train_steps, k=k,
                    seed=seed, prior=prior, strides=strides, warp_weight=warp_weight,
                    flow_name=flow)
            except wr.RefinerMismatch as e:  # a refiner of another video in <out>/refiner
                raise AutolabelError(str(e)) from None
        probs = wr.label_video(task, variables, frames, labels, flows)
        hard = {t: np.argmax(p, -1).astype(np.uint8) for t, p in probs.items()}
        conf = {t: p.max(-1) for t, p in probs.items()}
    else:
        hard = prop.label_video(frames, labels, flows=flows)
        conf = flow_confidence(len(frames), labels, flows, num_classes)

    palette = viz.palette_for(num_classes)
    stats = {"ignored": 0, "pixels": 0, "confidence_sum": 0.0}
    for t, path in enumerate(tqdm.tqdm(paths, desc="write labels", unit="frame")):
        if t in labels_full:
            lab, c = labels_full[t], np.ones((full_h, full_w), np.float32)
        else:
            c = cv2.resize(conf[t].astype(np.float32), (full_w, full_h),
                           interpolation=cv2.INTER_LINEAR)
            if method == "warp_refine" and (h, w) != (full_h, full_w):
                p = cv2.resize(probs[t], (full_w, full_h), interpolation=cv2.INTER_LINEAR)
                p = p.reshape(full_h, full_w, -1)
                lab = np.argmax(p, -1).astype(np.uint8)
            else:
                lab = cv2.resize(hard[t], (full_w, full_h), interpolation=cv2.INTER_NEAREST)
            if min_confidence > 0:
                lab = np.where(c < min_confidence, IGNORE, lab).astype(np.uint8)
        stats["ignored"] += int((lab == IGNORE).sum())
        stats["pixels"] += lab.size
        stats["confidence_sum"] += float(c.sum())
        files.atomic_write_bytes(out_p / "labels" / f"{path.stem}.png",
                                 cv2.imencode(".png", lab)[1].tobytes())
        files.atomic_write_bytes(out_p / "confidence" / f"{path.stem}.png", cv2.imencode(
            ".png", np.round(np.clip(c, 0, 1) * 255).astype(np.uint8))[1].tobytes())
        image = viz.overlay(_read_full(path), lab, palette)
        files.atomic_write_bytes(out_p / "overlay" / f"{path.stem}.jpg", cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes())
    summary = {
        "method": method, "flow": flow if method in ("flow", "warp_refine") else None,
        "frames": len(paths), "labelled_frames": [paths[t].name for t in sorted(labels)],
        "working_size": [h, w], "input_size": [full_h, full_w],
        "min_confidence": min_confidence,
        "ignored_share": stats["ignored"] / max(stats["pixels"], 1),
        "mean_confidence": stats["confidence_sum"] / max(stats["pixels"], 1),
        "seconds": round(time.time() - t0, 1)}
    files.atomic_write_text(out_p / "autolabel.json", json.dumps(summary, indent=2))
    return summary


def _read_full(path: pathlib.Path) -> np.ndarray:
    return read_frame(path)


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", required=True, help="folder of frames (sorted by name)")
    p.add_argument("--labels", required=True, help="folder of class-id PNGs, same stems")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--num_classes", required=True, type=int)
    p.add_argument("--flow", default="dis", help="dis | farneback | <FlowNetS run folder>")
    p.add_argument("--max_side", type=int, default=320, help="0 = full resolution")
    p.add_argument("--min_confidence", type=float, default=0.0)
    p.add_argument("--refiner", default="", help="trained refiner run (skips training)")
    p.add_argument("--train_steps", type=int, default=300)
    p.add_argument("--sdc", default="", help="trained video reconstruction run (--method=sdc)")
    p.add_argument("--k", type=int, default=3, help="cycle length for refiner training")
    p.add_argument("--prior", default="segmenter", choices=("segmenter", "none"),
                   help="refiner's semantic prior: a segmenter trained on the labelled "
                        "frames, or none")
    p.add_argument("--strides", default="1",
                   help="comma-separated frame steps a refiner training cycle may take "
                        "(e.g. 1,2,3 reaches 3k frames from a labelled frame)")
    p.add_argument("--warp_weight", type=float, default=0.0,
                   help="weight of L_warp: keeps the refiner close to plain soft warping")
    a = p.parse_args(argv)
    try:
        summary = autolabel(a.frames, a.labels, a.out, a.method, a.num_classes, a.flow,
                            a.max_side or None, a.min_confidence, a.refiner or None,
                            a.train_steps, a.sdc or None, a.k, prior=a.prior,
                            strides=_strides(a.strides), warp_weight=a.warp_weight)
    except AutolabelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
