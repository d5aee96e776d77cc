"""Temporal consistency of a video segmentation, as measured in the GRFP paper.

Point trajectories are chained through the forward flow (Sundaram et al. 2010 style):
every pixel of frame 0 starts one, later frames start new ones where no live
trajectory lands (so disoccluded regions are measured too), and a trajectory ends when
it leaves the image or fails the forward-backward check. The score is the share of
trajectories (at least two frames long) whose predicted label is the same on all frames.

Host-side numpy: trajectory counts vary per frame, which suits neither jit nor sharding,
and the work is a few gathers per frame.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

import numpy as np

from vsegjax.ops import check_flow


class TemporalConsistencyResult(NamedTuple):
    """``ratio`` = consistent / total (NaN when total is 0); counts add over videos."""

    ratio: float
    consistent: int
    total: int


def combine_consistency(results: Iterable[TemporalConsistencyResult]
                        ) -> TemporalConsistencyResult:
    """Pools per-video (or per-host) results: sums the counts, recomputes the ratio."""
    consistent = total = 0
    for result in results:
        consistent += int(result.consistent)
        total += int(result.total)
    return TemporalConsistencyResult(consistent / total if total else float("nan"),
                                     consistent, total)


def _bilinear(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Samples ``field`` [H, W, C] at (x, y) points [N, 2], coordinates clamped to the image."""
    h, w = field.shape[:2]
    x = np.clip(pts[:, 0], 0.0, w - 1.0)
    y = np.clip(pts[:, 1], 0.0, h - 1.0)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    wx = (x - x0)[:, None]
    wy = (y - y0)[:, None]
    top = field[y0, x0] * (1.0 - wx) + field[y0, x1] * wx
    bottom = field[y1, x0] * (1.0 - wx) + field[y1, x1] * wx
    return top * (1.0 - wy) + bottom * wy


def _nearest(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) integer pixel of each (x, y) point, rounding halves up."""
    return (np.floor(pts[:, 1] + 0.5).astype(np.int64),
            np.floor(pts[:, 0] + 0.5).astype(np.int64))


def _check_inputs(labels: np.ndarray, flow_fwd: np.ndarray, flow_bwd: np.ndarray) -> None:
    if labels.ndim != 3:
        raise ValueError(f"labels_pred must be [T, H, W] integer ids; got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels_pred must hold integer class ids; got dtype {labels.dtype}")
    t, h, w = labels.shape
    for name, flow in (("flow_fwd", flow_fwd), ("flow_bwd", flow_bwd)):
        check_flow(flow.shape, name=name)
        if flow.shape != (t - 1, h, w, 2):
            raise ValueError(f"{name} shape {flow.shape} must be [T-1, H, W, 2] = "
                             f"{(t - 1, h, w, 2)} for labels_pred of shape {labels.shape}")
        if not np.all(np.isfinite(flow)):
            raise ValueError(f"{name} has non-finite values")


def temporal_consistency(labels_pred: Any, flow_fwd: Any, flow_bwd: Any, *,
                         alpha1: float = 0.01, alpha2: float = 0.5,
                         min_length: int = 2) -> TemporalConsistencyResult:
    """Share of flow trajectories of ONE video whose predicted label never changes.

    Args:
      labels_pred: [T, H, W] predicted class ids.
      flow_fwd: [T-1, H, W, 2]; pixel p of frame t moves to p + flow_fwd[t][p] in t+1.
      flow_bwd: [T-1, H, W, 2]; the flow from frame t+1 back to frame t.
      alpha1, alpha2: forward-backward check; a step p -> p + f fails when
        |f + b(p + f)|^2 > alpha1 (|f|^2 + |b(p + f)|^2) + alpha2 (Sundaram et al., UnFlow).
      min_length: trajectories spanning fewer frames are not counted.

    Positions stay sub-pixel; the flow is sampled bilinearly there and the label is read
    at the nearest pixel. A step whose target leaves [0, W-1] x [0, H-1] ends the
    trajectory (the frames it already covered still count). Trajectories that land on
    the same pixel are all kept.
    """
    labels = np.asarray(labels_pred)
    flow_fwd = np.asarray(flow_fwd, dtype=np.float64)
    flow_bwd = np.asarray(flow_bwd, dtype=np.float64)
    _check_inputs(labels, flow_fwd, flow_bwd)
    num_frames, h, w = labels.shape

    rows, cols = np.mgrid[0:h, 0:w]
    grid_pts = np.stack([cols.ravel(), rows.ravel()], axis=-1).astype(np.float64)

    # Live trajectory state, one entry per trajectory.
    pos = grid_pts.copy()
    first = labels[0].ravel().copy()       # label on the trajectory's first frame
    same = np.ones(h * w, dtype=bool)      # label unchanged so far
    length = np.ones(h * w, dtype=np.int64)
    consistent = total = 0

    def finish(done_same: np.ndarray, done_length: np.ndarray) -> None:
        nonlocal consistent, total
        counted = done_length >= min_length
        total += int(counted.sum())
        consistent += int((counted & done_same).sum())

    for t in range(num_frames - 1):
        f = _bilinear(flow_fwd[t], pos)
        target = pos + f
        inside = ((target[:, 0] >= 0) & (target[:, 0] <= w - 1)
                  & (target[:, 1] >= 0) & (target[:, 1] <= h - 1))
        b = _bilinear(flow_bwd[t], target)
        mismatch = np.sum(np.square(f + b), axis=-1)
        bound = alpha1 * (np.sum(np.square(f), -1) + np.sum(np.square(b), -1)) + alpha2
        alive = inside & (mismatch <= bound)
        finish(same[~alive], length[~alive])

        pos, first, same = target[alive], first[alive], same[alive]
        length = length[alive] + 1
        next_labels = labels[t + 1]
        r, c = _nearest(pos)
        same &= next_labels[r, c] == first

        # Seed new trajectories on pixels of frame t+1 that no live trajectory reached.
        covered = np.zeros((h, w), dtype=bool)
        covered[r, c] = True
        free = ~covered.ravel()
        n_new = int(free.sum())
        pos = np.concatenate([pos, grid_pts[free]])
        first = np.concatenate([first, next_labels.ravel()[free]])
        same = np.concatenate([same, np.ones(n_new, dtype=bool)])
        length = np.concatenate([length, np.ones(n_new, dtype=np.int64)])

    finish(same, length)
    return TemporalConsistencyResult(consistent / total if total else float("nan"),
                                     consistent, total)
