"""Propagation accuracy: mIoU of propagated labels against true labels vs. distance k.

Every method labels frame ``anchor + k`` from the anchor's label alone; scores pool one
confusion matrix per (method, k) over all videos. Writes ``propagation.json``
(``{"dataset", "ks", "miou": {method: {k: value}}, ...}``; a training run's
``eval_metrics.json`` instead) and ``propagation.png`` (a line chart per method). Datasets:

  synthetic  rendered videos with every frame labelled (``run_synthetic``, the report of
             ``configs/warp_refine_synthetic.py``)
  davis      DAVIS 2016 sequences, object vs background, label of the first frame only
  camvid     CamVid val (every 2nd video frame, all labelled), anchors every 25 frames

    python -m vsegjax.methods.warp_refine.report --dataset=davis \
        --data=../shared/data/davis2016 --out=runs/prop_davis --max_side=256
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
import tqdm

from vsegjax import files
from vsegjax.data import synthetic
from vsegjax.data.frame_sources import list_images, read_frame, read_label_ids
from vsegjax.evaluation.pooling import per_process
from vsegjax.evaluation.scores import ConfusionMatrices
from vsegjax.evaluation.segmentation import iou_from_confusion
from vsegjax.models import propagate as prop
from vsegjax.methods.warp_refine import video as warp_refine
from vsegjax.methods.vplr.sdc import load_sdc_flow

# (frames [T,H,W,3] float, {anchor: label}, flows (fwd, bwd), targets) -> {t: label [H, W]}
Method = Callable[[np.ndarray, dict[int, np.ndarray], tuple, list[int]], dict[int, np.ndarray]]


def flow_method(frames, labels, flows, targets):
    (anchor, label), = labels.items()
    return prop.propagate_labels(label, anchor, *flows, targets)


def motion_method(source) -> Method:
    """Label propagation along another motion source (e.g. the SDC model's ``SDCFlow``)."""
    def fn(frames, labels, flows, targets):
        return flow_method(frames, labels, prop.video_flows(frames, source), targets)
    return fn


def copy_method(frames, labels, flows, targets):
    (anchor, label), = labels.items()
    return {t: np.asarray(label).copy() for t in targets}


def warp_refine_method(task, variables) -> Method:
    """A trained refiner (shared across videos) as a propagation method."""

    def fn(frames, labels, flows, targets):
        probs = warp_refine.label_video(task, variables, frames, labels, flows)
        return {t: np.argmax(probs[t], -1).astype(np.uint8) for t in targets}
    return fn


class Scores:
    """Confusion matrices per (method, k)."""

    def __init__(self, num_classes: int):
        self.matrices = ConfusionMatrices(num_classes)
        self.cms: dict[str, dict[int, np.ndarray]] = {}  # method -> k -> the same matrices

    def add(self, method: str, k: int, pred: np.ndarray, label: np.ndarray) -> None:
        self.matrices.add((method, k), pred, label)
        self.cms.setdefault(method, {})[k] = self.matrices.cms[(method, k)]

    def pooled(self, methods: Sequence[str], ks: Sequence[int]) -> "Scores":
        """The scores summed over every process (each scored its own videos); the
        (method, k) pairs no process scored stay absent."""
        keys = [(m, k) for m in methods for k in sorted(ks)]
        every = ConfusionMatrices(self.matrices.num_classes, keys)
        for key, cm in self.matrices.cms.items():
            every.add_counts(key, cm)
        every = every.pooled()
        out = Scores(self.matrices.num_classes)
        for m, k in keys:
            if every.cms[(m, k)].sum():
                out.matrices.add_counts((m, k), every.cms[(m, k)])
                out.cms.setdefault(m, {})[k] = out.matrices.cms[(m, k)]
        return out

    def miou(self) -> dict[str, dict[int, float]]:
        return {m: {k: self.matrices.miou((m, k)) for k in sorted(ks)}
                for m, ks in self.cms.items()}

    def class_iou(self, cls: int) -> dict[str, dict[int, float]]:
        return {m: {k: float(np.asarray(iou_from_confusion(cm)[1])[cls])
                    for k, cm in sorted(ks.items())} for m, ks in self.cms.items()}


def score_video(scores: Scores, methods: Mapping[str, Method], frames: np.ndarray,
                labels: Mapping[int, np.ndarray], anchor: int, ks: Iterable[int],
                flows: tuple[np.ndarray, np.ndarray], both_directions: bool = False) -> None:
    """Propagates ``labels[anchor]`` with every method to ``anchor +- k`` and scores it."""
    n = len(frames)
    ks = [k for k in ks if k > 0]
    targets = sorted({anchor + s * k for k in ks for s in ((1, -1) if both_directions else (1,))
                      if 0 <= anchor + s * k < n and anchor + s * k in labels})
    for name, fn in methods.items():
        pred = fn(frames, {anchor: labels[anchor]}, flows, targets)
        for t in targets:
            scores.add(name, abs(t - anchor), pred[t], labels[t])


def write_report(result: dict[str, Any], out_dir: str, title: str) -> None:
    """``propagation.json`` and ``propagation.png`` (mIoU vs k, one line per method)."""
    files.atomic_write_text(os.path.join(out_dir, "propagation.json"),
                            json.dumps(result, indent=2))
    draw_chart(result, os.path.join(out_dir, "propagation.png"), title)


def draw_chart(result: dict[str, Any], path: str, title: str) -> None:
    """mIoU vs k, one line per method, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for method, by_k in result["miou"].items():
        ks = sorted(int(k) for k in by_k)
        ax.plot(ks, [by_k[k] if k in by_k else by_k[str(k)] for k in ks], marker="o",
                label=method)
    ax.set_xlabel("distance k from the labelled frame (frames)")
    ax.set_ylabel("mIoU of propagated labels")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    files.atomic_write_bytes(path, buffer.getvalue())


def format_table(miou: Mapping[str, Mapping[int, float]]) -> str:
    ks = sorted({int(k) for v in miou.values() for k in v})
    lines = ["method        " + "".join(f"k={k:<6d}" for k in ks)]
    for m, by_k in miou.items():
        lines.append(f"{m:<14s}" + "".join(f"{by_k.get(k, float('nan')):<8.3f}" for k in ks))
    return "\n".join(lines)


# --------------------------------------------------------------------------- synthetic


def synthetic_videos(num_videos: int, num_frames: int, size: tuple[int, int], seed: int = 7,
                     indices: Iterable[int] | None = None):
    """Rendered validation videos (uint8 frames, every frame labelled); ``indices``
    picks some of the ``num_videos``."""
    # Every frame is labelled here; label_index only has to lie inside a short video (the
    # default, 4, is kept for longer ones so their rendering does not change).
    label_index = min(synthetic.SyntheticConfig.label_index, int(num_frames) - 1)
    cfg = synthetic.SyntheticConfig(height=int(size[0]), width=int(size[1]),
                                    num_frames=int(num_frames), label_index=label_index,
                                    seed=seed)
    for i in (range(num_videos) if indices is None else indices):
        ex = synthetic.generate_snippet(cfg, "validation", i)
        yield ex["frames"], dict(enumerate(ex["labels"]))


def report(config, workdir: str, stages: Sequence[Any]) -> dict[str, Any]:
    """The runner's report for a Warp-Refine run: its refiner (the last stage) against copy
    and flow on rendered videos (``run_synthetic``)."""
    result = stages[-1]
    variables = {"params": result.state.params, **result.state.model_state}
    return run_synthetic(config, workdir, refiner=(result.task, variables))


def run_synthetic(config, workdir: str, refiner: tuple[Any, dict] | None = None
                  ) -> dict[str, Any]:
    """copy / flow / (sdc) / (warp_refine) on ``eval.num_videos`` rendered videos of
    ``eval.num_frames`` frames, propagated from frame 0 (config: a warp_refine config;
    ``eval.sdc_workdir`` adds the video reconstruction model's motion as ``sdc``). Draws
    ``workdir/propagation.png``; the results are the run's ``eval_metrics.json``."""
    e = config.eval
    sdc = None
    if e.sdc_workdir:
        sdc = motion_method(load_sdc_flow(e.sdc_workdir))
    size = tuple(config.input.augment.resize or config.input.augment.crop_size)
    flow_source = config.warp_refine.flow
    methods: dict[str, Method] = {"copy": copy_method, "flow": flow_method}
    if sdc is not None:
        methods["sdc"] = sdc
    if refiner is not None:
        methods["warp_refine"] = warp_refine_method(*refiner)
    scores = Scores(int(config.model.num_classes))
    ks = list(range(1, int(e.num_frames)))
    # Process p scores videos p, p + P, ...; the matrices are pooled over the processes.
    mine = range(jax.process_index(), int(e.num_videos), jax.process_count())
    for frames, labels in tqdm.tqdm(synthetic_videos(int(e.num_videos), int(e.num_frames),
                                                     size, int(e.video_seed), mine),
                                    total=len(mine), desc="propagation", unit="video",
                                    disable=not files.is_writer()):
        frames = frames.astype(np.float32) / 255.0
        flows = prop.video_flows(frames, flow_source)
        score_video(scores, methods, frames, labels, 0, ks, flows)
    scores = scores.pooled(list(methods), ks)
    result = {"dataset": "synthetic", "ks": ks, "flow": flow_source,
              "num_videos": int(e.num_videos), "miou": scores.miou(),
              "videos_per_process": per_process(len(mine))}
    draw_chart(result, os.path.join(workdir, "propagation.png"),
               f"synthetic: {e.num_videos} videos, anchor = frame 0")
    print(format_table(result["miou"]))
    return result


# --------------------------------------------------------------------------- real data


def davis_videos(root: str, max_side: int | None = 256, max_frames: int | None = None):
    """(name, frames float [T,H,W,3], {t: 0/1 label}) per DAVIS 2016 sequence under root."""
    root = pathlib.Path(root).expanduser()
    seq_root = root / "JPEGImages" / "480p"
    if not seq_root.is_dir():
        raise FileNotFoundError(f"DAVIS folder {root} has no JPEGImages/480p")
    for seq in sorted(p.name for p in seq_root.iterdir() if p.is_dir()):
        paths = list_images(seq_root / seq, f"DAVIS {seq} frames")[:max_frames]
        frames = np.stack([read_frame(p) for p in paths])
        labels = {}
        for t, p in enumerate(paths):
            mask = root / "Annotations" / "480p" / seq / (p.stem + ".png")
            labels[t] = (read_label_ids(mask) > 127).astype(np.uint8)
        frames, labels = prop.resize_video(frames, labels, max_side)
        yield seq, frames.astype(np.float32) / 255.0, labels


def camvid_val(root: str, max_side: int | None = 240):
    """(frames, {t: label}) of CamVid val in file order (every 2nd video frame); 11 -> 255."""
    root = pathlib.Path(root).expanduser()
    paths = list_images(root / "val", "CamVid val frames")
    frames = np.stack([read_frame(p) for p in paths])
    labels = {}
    for t, p in enumerate(paths):
        lab = read_label_ids(root / "valannot" / p.name)
        labels[t] = np.where(lab >= 11, 255, lab).astype(np.uint8)
    frames, labels = prop.resize_video(frames, labels, max_side)
    return frames.astype(np.float32) / 255.0, labels


def run_real(dataset: str, data: str, out: str, methods: Iterable[str] = ("copy", "flow"),
             flow: str = "dis", max_side: int | None = 256, ks: Iterable[int] | None = None,
             train_steps: int = 300, max_frames: int | None = None,
             sdc_workdir: str | None = None, cycle_k: int = 3, prior: str = "segmenter",
             strides: Iterable[int] = (1,), warp_weight: float = 0.0) -> dict[str, Any]:
    """DAVIS (first frame labelled, object/background) or CamVid val (anchors every 25
    val frames); ``warp_refine`` trains a refiner on each video's anchor labels first."""
    methods = list(methods)
    unknown = set(methods) - {"copy", "flow", "sdc", "warp_refine"}
    if unknown:
        raise ValueError(f"--methods: unknown {sorted(unknown)}; choose from copy, flow, "
                         f"sdc, warp_refine")
    if "sdc" in methods and not sdc_workdir:
        raise ValueError("--methods=sdc needs --sdc=<video reconstruction run>")
    if dataset == "davis":
        videos = [(name, f, l, [0]) for name, f, l in davis_videos(data, max_side, max_frames)]
        num_classes, ks = 2, list(ks or (1, 5, 10))
        step = 1
    elif dataset == "camvid":
        f, l = camvid_val(data, max_side)
        videos = [("camvid_val", f, l, [a for a in (0, 25, 50, 75) if a < len(f)])]
        num_classes, ks = 11, list(ks or (1, 5, 15))
        step = 2  # val frames are every 2nd video frame
    else:
        raise ValueError(f"--dataset: 'davis' or 'camvid' here (synthetic runs through "
                         f"configs/warp_refine_synthetic.py); got {dataset!r}")
    scores = Scores(num_classes)
    for name, frames, labels, anchors in tqdm.tqdm(videos, desc="propagation", unit="video"):
        flows = prop.video_flows(frames, flow)
        fns: dict[str, Method] = {}
        for m in methods:
            if m == "copy":
                fns[m] = copy_method
            elif m == "flow":
                fns[m] = flow_method
            elif m == "sdc":
                fns[m] = motion_method(load_sdc_flow(sdc_workdir))
            else:
                task, variables = warp_refine.train_on_video(
                    frames, {a: labels[a] for a in anchors}, num_classes, flows,
                    os.path.join(out, "refiners", name), steps=train_steps, k=cycle_k,
                    prior=prior, strides=tuple(strides), warp_weight=warp_weight,
                    flow_name=str(flow))
                fns[m] = warp_refine_method(task, variables)
        for a in anchors:
            score_video(scores, fns, frames, labels, a, ks, flows)
    miou = {m: {k * step: v for k, v in by_k.items()} for m, by_k in scores.miou().items()}
    result = {"dataset": dataset, "ks_video_frames": [k * step for k in ks], "flow": flow,
              "max_side": max_side, "train_steps": train_steps, "cycle_k": cycle_k,
              "prior": prior, "strides": list(strides), "warp_weight": warp_weight,
              "videos": [v[0] for v in videos], "miou": miou}
    if dataset == "davis":
        result["object_iou"] = {m: {k * step: v for k, v in by_k.items()}
                                for m, by_k in scores.class_iou(1).items()}
    write_report(result, out, f"{dataset}: {len(videos)} video(s), max side {max_side}")
    print(format_table(miou))
    return result


def main(argv: list[str] | None = None) -> None:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=("davis", "camvid"))
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="output folder (JSON + PNG)")
    p.add_argument("--methods", default="copy,flow,warp_refine")
    p.add_argument("--flow", default="dis", choices=("dis", "farneback"))
    p.add_argument("--max_side", type=int, default=256)
    p.add_argument("--ks", default="", help="comma-separated distances (val frames)")
    p.add_argument("--train_steps", type=int, default=300)
    p.add_argument("--max_frames", type=int, default=0)
    p.add_argument("--sdc", default="", help="video reconstruction run (for --methods=sdc)")
    p.add_argument("--cycle_k", type=int, default=3, help="refiner training cycle length")
    p.add_argument("--prior", default="segmenter", choices=("segmenter", "none"),
                   help="the refiner's semantic prior (warp_refine.prior)")
    p.add_argument("--strides", default="1",
                   help="comma-separated frame steps of the refiner's training cycles")
    p.add_argument("--warp_weight", type=float, default=0.0,
                   help="weight of L_warp, the refiner's pull towards plain soft warping")
    a = p.parse_args(argv)
    ks = [int(k) for k in a.ks.split(",") if k] or None
    run_real(a.dataset, a.data, a.out, [m for m in a.methods.split(",") if m], a.flow,
             a.max_side or None, ks, a.train_steps, a.max_frames or None, a.sdc or None,
             a.cycle_k, a.prior, [int(x) for x in a.strides.split(",") if x], a.warp_weight)


if __name__ == "__main__":
    main()
