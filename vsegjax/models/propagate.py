"""Label and joint (image, label) propagation along motion, k frames from a labelled frame.

The motion of a video is given as its step flows in the ``flow_providers`` convention
(``flow_fwd[t]``: frame t -> t+1, ``flow_bwd[t]``: frame t+1 -> t, both [T-1, H, W, 2]).
To carry frame a's label to frame a+k the step flows are composed into one flow from
frame a+k's grid to frame a's (``compose_flow``), and the label is sampled once with
nearest neighbours: chaining k nearest-neighbour warps would round k times and let thin
structures erode. Sample positions that leave the image are clamped to its border, so
every pixel of the target frame gets a label (``copy`` is the zero flow).

    fwd, bwd = video_flows(frames, "dis")
    labels = propagate_labels(label, anchor=0, flow_fwd=fwd, flow_bwd=bwd, targets=range(T))
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from vsegjax.models.flow_providers import FlowProvider, OpenCVFlow
from vsegjax.ops.flow import compose_flow
from vsegjax.ops.warp import pixel_grid, warp, warp_nearest

IGNORE_LABEL = 255
MOTION_SOURCES = ("copy", "dis", "farneback")


def video_flows(frames: np.ndarray, source: str | FlowProvider) -> tuple[np.ndarray, np.ndarray]:
    """(flow_fwd, flow_bwd) [T-1, H, W, 2] of one video ``frames`` [T, H, W, 3].

    ``source``: "copy" (zero motion), "dis" / "farneback" (OpenCV), or any ``FlowProvider``
    (a learned FlowNetS, the SDC model's motion vectors, ...).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, H, W, 3]; got shape {frames.shape}")
    t, h, w = frames.shape[:3]
    if t == 1 or source == "copy":
        zero = np.zeros((max(t - 1, 0), h, w, 2), np.float32)
        return zero, zero.copy()
    if isinstance(source, str):
        if source not in MOTION_SOURCES:
            raise ValueError(f"motion source {source!r}: choose from {list(MOTION_SOURCES)} "
                             f"or pass a FlowProvider")
        source = OpenCVFlow(source)
    fwd, bwd = source.flows(frames[None])
    return np.asarray(fwd[0], np.float32), np.asarray(bwd[0], np.float32)


@jax.jit
def _compose(step: jax.Array, acc: jax.Array) -> jax.Array:
    return compose_flow(step, acc)


def flows_to_anchor(anchor: int, flow_fwd: np.ndarray, flow_bwd: np.ndarray,
                    targets: Iterable[int]) -> dict[int, np.ndarray]:
    """For each target t, the flow [H, W, 2] from frame t's grid to frame ``anchor``'s.

    Built outward from the anchor, one composition per frame: F_{a+j -> a} is the step
    flow a+j -> a+j-1 followed by F_{a+j-1 -> a} (and mirrored before the anchor).
    """
    flow_fwd, flow_bwd = np.asarray(flow_fwd), np.asarray(flow_bwd)
    n = flow_fwd.shape[0] + 1
    targets = sorted(set(int(t) for t in targets))
    if targets and (targets[0] < 0 or targets[-1] >= n):
        raise ValueError(f"targets {targets[0]}..{targets[-1]} outside the video's {n} frames")
    if not 0 <= anchor < n:
        raise ValueError(f"anchor {anchor} outside the video's {n} frames")
    out: dict[int, np.ndarray] = {}
    zero = np.zeros(flow_fwd.shape[1:] if n > 1 else (1, 1, 2), np.float32)
    if anchor in targets:
        out[anchor] = zero
    for direction, steps in ((1, flow_bwd), (-1, flow_fwd)):
        wanted = [t for t in targets if (t - anchor) * direction > 0]
        if not wanted:
            continue
        acc = jnp.asarray(zero)
        for j in range(1, max(abs(t - anchor) for t in wanted) + 1):
            t = anchor + direction * j
            # flow_bwd[t-1]: t -> t-1 (forward in time); flow_fwd[t]: t -> t+1 (backward).
            step = steps[t - 1] if direction == 1 else steps[t]
            acc = _compose(jnp.asarray(step), acc)
            if t in wanted:
                out[t] = np.asarray(acc)
    return out


def clamp_to_image(flow: jax.Array) -> jax.Array:
    """The flow with every sample position ``p + flow(p)`` clamped into the image."""
    h, w = flow.shape[-3:-1]
    grid = pixel_grid(h, w, flow.dtype)
    pos = grid + flow
    pos = jnp.stack([jnp.clip(pos[..., 0], 0, w - 1), jnp.clip(pos[..., 1], 0, h - 1)], -1)
    return pos - grid


@jax.jit
def _warp_label(label: jax.Array, flow: jax.Array) -> jax.Array:
    return warp_nearest(label, clamp_to_image(flow), fill_value=IGNORE_LABEL)


@jax.jit
def _warp_image(image: jax.Array, flow: jax.Array) -> jax.Array:
    return warp(image, flow, padding="border")


def propagate_labels(label: np.ndarray, anchor: int, flow_fwd: np.ndarray,
                     flow_bwd: np.ndarray, targets: Iterable[int]) -> dict[int, np.ndarray]:
    """Label propagation: frame ``anchor``'s ``label`` [H, W] carried to each target frame."""
    label = np.asarray(label)
    flows = flows_to_anchor(anchor, flow_fwd, flow_bwd, targets)
    return {t: np.asarray(_warp_label(jnp.asarray(label), jnp.asarray(f))).astype(label.dtype)
            for t, f in flows.items()}


def propagate_joint(image: np.ndarray, label: np.ndarray, anchor: int, flow_fwd: np.ndarray,
                    flow_bwd: np.ndarray, targets: Iterable[int]
                    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Joint propagation (VPLR): the anchor's image and label moved by the same flow.

    Each new pair is aligned by construction: the synthesised image (bilinear) shows what
    the label (nearest) says, even where the flow is wrong; label propagation pairs a
    shifted label with the true frame instead.
    """
    image, label = np.asarray(image), np.asarray(label)
    flows = flows_to_anchor(anchor, flow_fwd, flow_bwd, targets)
    out = {}
    for t, f in flows.items():
        f = jnp.asarray(f)
        img = np.asarray(_warp_image(jnp.asarray(image, jnp.float32), f))
        lab = np.asarray(_warp_label(jnp.asarray(label), f)).astype(label.dtype)
        out[t] = (img.astype(image.dtype) if image.dtype != np.uint8
                  else np.clip(np.round(img), 0, 255).astype(np.uint8), lab)
    return out


def nearest_anchor(t: int, anchors: Iterable[int]) -> int:
    """The labelled frame closest in time to frame t (the earlier one on a tie)."""
    anchors = sorted(anchors)
    if not anchors:
        raise ValueError("no labelled frame to propagate from")
    return min(anchors, key=lambda a: (abs(a - t), a))


def assign_anchors(num_frames: int, anchors: Iterable[int]) -> dict[int, list[int]]:
    """anchor -> the frames it labels (each frame from its nearest labelled frame)."""
    anchors = sorted(set(int(a) for a in anchors))
    out: dict[int, list[int]] = {a: [] for a in anchors}
    for t in range(num_frames):
        out[nearest_anchor(t, anchors)].append(t)
    return out


def label_video(frames: np.ndarray, labels: dict[int, np.ndarray],
                source: str | FlowProvider = "dis", flows: tuple[Any, Any] | None = None
                ) -> dict[int, np.ndarray]:
    """A label for every frame of ``frames`` [T, H, W, 3] from the sparse ``labels``
    {frame index: [H, W]}, each propagated from its nearest labelled frame."""
    if not labels:
        raise ValueError("label_video needs at least one labelled frame")
    flow_fwd, flow_bwd = flows if flows is not None else video_flows(frames, source)
    out: dict[int, np.ndarray] = {}
    for anchor, targets in assign_anchors(len(frames), labels).items():
        out.update(propagate_labels(labels[anchor], anchor, flow_fwd, flow_bwd, targets))
    return out


def resize_video(frames: np.ndarray, labels: dict[int, np.ndarray], max_side: int | None,
                 min_side: int = 8) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Frames (area) and labels (nearest) scaled so the longer side is ``max_side``
    (no change when it already fits or ``max_side`` is None / 0)."""
    import cv2
    h, w = frames.shape[1:3]
    if not max_side or max(h, w) <= max_side:
        return frames, labels
    s = max_side / max(h, w)
    size = (max(min_side, round(w * s)), max(min_side, round(h * s)))
    frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    labels = {t: cv2.resize(l, size, interpolation=cv2.INTER_NEAREST)
              for t, l in labels.items()}
    return frames, labels
