"""vsegjax.segment streams: peak memory with 160 frames vs 40 frames of the same video.

    python benchmarks/segment_memory.py --workdir=RUN [--input=VIDEO] [--frames=40,160]

Runs ``python -m vsegjax.segment`` once per frame count, each in its own process, and
prints frames, the label PNGs and MP4 frames it wrote, frames/s and the peak resident
memory each process reached (its ``segment.json``), then the ratio of the longest run's peak to the shortest's. The input
defaults to ``../shared/data/video/vtest.avi``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import cv2

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _count_frames(path: pathlib.Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained run")
    parser.add_argument("--input", default=str(ROOT.parent / "shared/data/video/vtest.avi"))
    parser.add_argument("--frames", default="40,160")
    parser.add_argument("--extra", default="", help="more flags for vsegjax.segment")
    args = parser.parse_args()
    counts = [int(n) for n in args.frames.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            out = pathlib.Path(tmp) / f"out{n}"
            cmd = [sys.executable, "-m", "vsegjax.segment", f"--workdir={args.workdir}",
                   f"--input={args.input}", f"--out={out}", f"--max_frames={n}",
                   *args.extra.split()]
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            row = json.loads((out / "segment.json").read_text())
            # What was written, counted from the files themselves.
            row["pngs"] = len(list((out / "labels").glob("*.png")))
            row["mp4_frames"] = _count_frames(out / "overlay.mp4")
            rows.append(row)
    print(f"{'frames':>7} {'PNGs':>5} {'MP4 frames':>11} {'frames/s':>9} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['frames']:>7} {r['pngs']:>5} {r['mp4_frames']:>11} "
              f"{r['fps_achieved']:>9.1f} {r['peak_rss_mb']:>12.0f}")
    print(f"peak RSS {rows[-1]['frames']} / {rows[0]['frames']} frames: "
          f"{rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.3f}x "
          f"(task {rows[0]['task']}, model size {rows[0]['model_size']})")


if __name__ == "__main__":
    main()
