"""Segment any video with a trained run.

    python -m vsegjax.segment --workdir=RUN --input=VIDEO_OR_FRAMES_DIR --out=OUT \
        [--max_frames=N] [--max_side=S] [--stage=NAME] [--flow=dis|farneback] [--overwrite]

Runs the run's model (the static segmenter; GRFP forward, carrying the STGRU state frame
by frame along the run's flow; EFC's segmentation branch) over a video file (anything
OpenCV decodes) or a folder of frames, and writes

  OUT/labels/<stem>.png   class ids at the input resolution, one per frame (a video's
                          stem is its zero-padded frame index, a folder's the file stem)
  OUT/overlay.mp4         the palette over the frames, same frame count and fps
  OUT/segment.json        run, model, frames, fps achieved, peak memory

Frames are processed one at a time (memory does not grow with the video's length) at
``--max_side`` (default: the longer side the run trained at) and the logits resized back
to each frame's size. The input is only read; an existing OUT that holds anything is
refused unless ``--overwrite`` (which replaces only the files listed above).
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import sys
import time
from typing import Any, Iterator

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import app, flags

from vsegjax import viz
from vsegjax.data import frame_sources
from vsegjax.inference import trained
from vsegjax.core import writers
OUTPUTS = ("labels", "overlay.mp4", "segment.json")
DEFAULT_FPS = 10.0  # a folder of frames has none


def _flags() -> None:
    flags.DEFINE_string("workdir", None, "the run (the runner's workdir or a stage folder)")
    flags.DEFINE_string("input", None, "a video file or a folder of frames")
    flags.DEFINE_string("out", None, "output folder")
    flags.DEFINE_integer("max_frames", None, "segment at most this many frames")
    flags.DEFINE_integer("max_side", None, "longer side the model runs at (default: the "
                         "run's training size)")
    flags.DEFINE_string("stage", None, "stage of the run (default: its last that segments)")
    flags.DEFINE_enum("flow", None, ["dis", "farneback"], "replace a GRFP run's flow source")
    flags.DEFINE_bool("overwrite", False, "write into an existing, non-empty OUT")
    flags.DEFINE_float("fps", DEFAULT_FPS, "overlay.mp4's frame rate for a folder of frames")


def check_paths(input_path: str, out: str, overwrite: bool) -> tuple[pathlib.Path, pathlib.Path]:
    """(input, out) resolved; refuses an input that is missing, an OUT inside the input
    folder, and an existing non-empty OUT without ``overwrite``."""
    src = pathlib.Path(input_path).expanduser().resolve()
    dst = pathlib.Path(out).expanduser().resolve()
    if not src.exists():
        raise FileNotFoundError(f"--input={input_path}: no such file or folder")
    if src.is_dir() and (dst == src or src in dst.parents):
        raise ValueError(f"--out={out} is inside the input folder {src}; the input is only "
                         f"read, so write somewhere else")
    if dst.is_file():
        raise ValueError(f"--out={out} is a file, not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ValueError(f"--out={out} exists and is not empty; pass --overwrite to replace "
                         f"its {', '.join(OUTPUTS)}, or pick another folder")
    return src, dst


def open_frames(src: pathlib.Path, max_frames: int | None):
    """A frame source (``vsegjax.data.frame_sources``) over a video file or a folder."""
    if src.is_dir():
        paths = frame_sources.list_images(src, "frames", error=ValueError)
        return frame_sources.FolderFrames(paths[:max_frames] if max_frames else paths)
    return frame_sources.VideoFrames(src, max_frames=max_frames)


def work_size(height: int, width: int, max_side: int, multiple: int = 8) -> tuple[int, int]:
    """(h, w) with the longer side ``max_side`` (never above the frame's), aspect kept,
    each rounded to a multiple of ``multiple`` (the segmenter's strides)."""
    scale = min(1.0, max_side / max(height, width))
    return tuple(max(multiple, int(round(s * scale / multiple)) * multiple)
                 for s in (height, width))


class Segmenter:
    """A ``TrainedModel`` applied one frame at a time (with the STGRU state for GRFP)."""

    def __init__(self, model, size: tuple[int, int]):

        self.model, self.size = model, size
        self.variables = jax.device_put(model.variables)
        self.stgru = jax.device_put(model.stgru) if model.recurrent else None
        self.h = self.prev = None

        def static(variables, frame):
            return model.frame_logits(variables, frame[None])[0]

        def step(stgru, h, x_logits, frame, prev, flow):
            h, logp = model.stgru_step(stgru, h[None], x_logits[None], frame[None],
                                       prev[None], flow[None])
            return h[0], logp[0]

        def first(x_logits):
            logp = jax.nn.log_softmax(x_logits.astype(jnp.float32), -1)
            return jnp.exp(logp), logp

        def labels(logp, out_hw):
            c = logp.shape[-1]
            up = jax.image.resize(logp, out_hw + (c,), "bilinear")
            return jnp.argmax(up, -1).astype(jnp.uint8)

        self._static, self._step, self._first = jax.jit(static), jax.jit(step), jax.jit(first)
        self._norm = jax.jit(lambda x: jax.nn.log_softmax(x.astype(jnp.float32), -1))
        self._labels = jax.jit(labels, static_argnums=1)

    def __call__(self, frame_u8: np.ndarray) -> np.ndarray:
        """Class ids [H, W] (uint8) of the next frame, uint8 RGB [H, W, 3]."""
        small = frame_u8
        if frame_u8.shape[:2] != self.size:
            small = cv2.resize(frame_u8, self.size[::-1], interpolation=cv2.INTER_AREA)
        logp = self.log_probs(small.astype(np.float32) / 255.0)
        return np.asarray(self._labels(logp, frame_u8.shape[:2]))

    def log_probs(self, small: np.ndarray) -> jax.Array:
        """Log-probabilities [h, w, C] of the next frame, float [h, w, 3] in [0, 1] at the
        model's size: the static ones, or GRFP's forward estimate given the frames before."""
        x = self._static(self.variables, small)
        if not self.model.recurrent:
            logp = self._norm(x)
        elif self.prev is None:
            self.h, logp = self._first(x)
        else:
            # Flow from frame t to frame t-1 (the "bwd" flow of the pair), as in training.
            _, to_prev = self.model.flow_provider.flows(np.stack([self.prev, small])[None],
                                                        need="bwd")
            self.h, logp = self._step(self.stgru, self.h, x, small, self.prev,
                                      np.asarray(to_prev)[0, 0])
        self.prev = small
        return logp


def segment(workdir: str, input_path: str, out: str, max_frames: int | None = None,
            max_side: int | None = None, stage: str | None = None, flow: str | None = None,
            overwrite: bool = False, fps: float = DEFAULT_FPS) -> dict[str, Any]:
    """Segments ``input_path`` with the run in ``workdir`` into ``out`` (see the module
    doc); returns what it writes to ``segment.json``."""

    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max_frames={max_frames}: must be >= 1")
    if max_side is not None and max_side < 8:
        raise ValueError(f"--max_side={max_side}: must be >= 8")
    writers.quiet_orbax()
    src, dst = check_paths(input_path, out, overwrite)
    source = open_frames(src, max_frames)  # bad input is named before the model loads
    try:  # the source is closed whatever fails (a run without checkpoints, say)
        first = source.get(0)
        model = trained.load(workdir, stage, flow)
        size = work_size(*first.shape[:2], max_side or max(model.input_size))
        rate = float(getattr(source, "fps", 0.0) or fps)

        labels_dir = dst / "labels"
        labels_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:  # only this command's own products are replaced
            for old in labels_dir.glob("*.png"):
                old.unlink()
        video_tmp = dst / "overlay.partial.mp4"
        writer = cv2.VideoWriter(str(video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), rate,
                                 (first.shape[1], first.shape[0]))
        if not writer.isOpened():
            raise RuntimeError(f"{video_tmp}: OpenCV cannot write an mp4v video here")
        run = Segmenter(model, size)
        t0, n = time.perf_counter(), len(source)
        try:
            for k, frame in tqdm.tqdm(_frames(source, first.shape), total=n, unit="frame",
                                      desc=f"segment ({model.task_name})"):
                ids = run(frame)
                cv2.imwrite(str(labels_dir / f"{source.stems[k]}.png"), ids)
                overlay = viz.overlay(frame, ids, model.palette)
                writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
    finally:
        source.close()
    seconds = time.perf_counter() - t0
    os.replace(video_tmp, dst / "overlay.mp4")
    result = {"run": model.run_dir, "stage": model.stage, "task": model.task_name,
              "step": model.step, "input": str(src), "frames": n,
              "frame_size": list(first.shape[:2]), "model_size": list(size),
              "flow": type(model.flow_provider).__name__ if model.recurrent else None,
              "fps_input": rate, "fps_achieved": n / seconds, "seconds": seconds,
              "peak_rss_mb": _peak_rss_mb(), "class_names": model.class_names}
    (dst / "segment.json").write_text(json.dumps(result, indent=2))
    return result


def _frames(source, shape: tuple[int, ...]) -> Iterator[tuple[int, np.ndarray]]:
    """(k, frame k) in order, forgetting each frame once read; a frame of another size
    than the first is named."""
    for k in range(len(source)):
        frame = source.get(k)
        source.forget_before(k + 1)
        if frame.shape != shape:
            raise ValueError(f"{source.where(k)}: frame of size {frame.shape[:2]}, the first "
                             f"frame has {shape[:2]}; every frame must have one size")
        yield k, frame


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10  # bytes vs KiB


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    for name in ("workdir", "input", "out"):
        if not getattr(f, name):
            raise app.UsageError(f"--{name} is required")
    try:
        result = segment(f.workdir, f.input, f.out, f.max_frames, f.max_side, f.stage, f.flow,
                         f.overwrite, f.fps)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"vsegjax.segment: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"segmented {result['frames']} frames at {result['fps_achieved']:.1f} frames/s "
          f"into {f.out}")


if __name__ == "__main__":
    _flags()
    app.run(main)
