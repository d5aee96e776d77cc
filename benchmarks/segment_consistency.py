"""GRFP vs its static net on a real, unlabelled video: temporal consistency of the labels.

    python benchmarks/segment_consistency.py --workdir=RUN [--input=VIDEO] [--frames=160]
        [--side=384] [--side_by_side=OUT.mp4]

Segments the first ``--frames`` frames of the video with ``vsegjax.segment`` twice, with
the run's GRFP stage and with its static stage, then follows DIS flow trajectories
(forward-backward checked, ``vsegjax.evaluation.temporal_consistency``) over the frames
at ``--side`` pixels wide and prints, for each model, frames/s and the share of
trajectories whose label never changes. There are no labels, so this measures stability,
not accuracy. The input defaults to ``../shared/data/video/vtest.avi``.
``--side_by_side`` also writes the two overlay videos next to each other (static left,
GRFP right, same frames and fps).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    from vsegjax.data.frame_sources import VideoFrames
    from vsegjax.evaluation.temporal import temporal_consistency
    from vsegjax.models.flow_providers import OpenCVFlow

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a GRFP run (static + grfp stages)")
    parser.add_argument("--input", default=str(ROOT.parent / "shared/data/video/vtest.avi"))
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--side", type=int, default=384, help="width trajectories run at")
    parser.add_argument("--side_by_side", default="", help="an .mp4 to write static | GRFP to")
    args = parser.parse_args()
    source = VideoFrames(args.input, max_frames=args.frames)
    h0, w0 = source.get(0).shape[:2]
    size = (int(round(h0 * args.side / w0)), args.side)
    frames = np.stack([cv2.resize(source.get(k), size[::-1], interpolation=cv2.INTER_AREA)
                       for k in range(len(source))])
    source.close()
    fwd, bwd = OpenCVFlow("dis").flows(frames[None], need="both")
    fwd, bwd = np.asarray(fwd)[0], np.asarray(bwd)[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in ("grfp", "static"):
            out = pathlib.Path(tmp) / stage
            subprocess.run([sys.executable, "-m", "vsegjax.segment", f"--workdir={args.workdir}",
                            f"--input={args.input}", f"--out={out}", f"--stage={stage}",
                            f"--max_frames={args.frames}"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            info = json.loads((out / "segment.json").read_text())
            labels = np.stack([cv2.resize(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), size[::-1],
                                          interpolation=cv2.INTER_NEAREST)
                               for p in sorted((out / "labels").glob("*.png"))])
            tc = temporal_consistency(labels, fwd, bwd)
            changed = float(np.mean(labels[1:] != labels[:-1]))
            rows.append((stage, info, tc, changed))
        if args.side_by_side:
            n = side_by_side(pathlib.Path(tmp) / "static" / "overlay.mp4",
                             pathlib.Path(tmp) / "grfp" / "overlay.mp4", args.side_by_side)
            print(f"wrote {args.side_by_side} ({n} frames: static | GRFP)")
    print(f"{args.input}: {len(frames)} frames, trajectories at {size[0]}x{size[1]} (DIS)")
    print(f"{'stage':>7} {'model size':>11} {'frames/s':>9} {'temporal consistency':>21} "
          f"{'pixels changing/frame':>22}")
    for stage, info, tc, changed in rows:
        print(f"{stage:>7} {str(info['model_size']):>11} {info['fps_achieved']:>9.1f} "
              f"{tc.ratio:>21.4f} {changed:>22.4f}")


def side_by_side(left: pathlib.Path, right: pathlib.Path, out: str) -> int:
    """Writes ``left | right`` frame by frame (titled) to ``out``; returns the frame count."""
    a, b = cv2.VideoCapture(str(left)), cv2.VideoCapture(str(right))
    fps = a.get(cv2.CAP_PROP_FPS) or 25.0
    writer, n = None, 0
    try:
        while True:
            ok_a, fa = a.read()
            ok_b, fb = b.read()
            if not (ok_a and ok_b):
                break
            for frame, title in ((fa, "static"), (fb, "GRFP")):
                cv2.putText(frame, title, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.9,
                            (255, 255, 255), 2, cv2.LINE_AA)
            both = np.concatenate([fa, fb], axis=1)
            if writer is None:
                pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         both.shape[1::-1])
            writer.write(both)
            n += 1
    finally:
        a.release()
        b.release()
        if writer is not None:
            writer.release()
    return n


if __name__ == "__main__":
    main()
