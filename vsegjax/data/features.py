"""The snippet format every vsegjax dataset writes and every pipeline reads.

A stored example is one video snippet of T frames:

    frames       uint8   [T, H, W, 3]
    labels       uint8   [T, H, W]      class ids, 255 = ignore (also on unlabelled frames)
    has_label    bool    [T]            which frames carry a label
    label_index  int32   []             the annotated frame the snippet is built around
    flow_fwd     float32 [T-1, H, W, 2] flow_fwd[t]: frame t -> t+1, so
                                        warp(frames[t+1], flow_fwd[t]) ~ frames[t]
    flow_bwd     float32 [T-1, H, W, 2] flow_bwd[t]: frame t+1 -> t, so
                                        warp(frames[t], flow_bwd[t]) ~ frames[t+1]
    occ_fwd      uint8   [T-1, H, W]    1 where a pixel of frame t has no visible match in t+1
    occ_bwd      uint8   [T-1, H, W]    1 where a pixel of frame t+1 has no visible match in t
    snippet_id   int64   []

Flow channel 0 is x (horizontal), channel 1 is y, in pixels. The flow and occlusion
keys are optional (real datasets without flow omit them); datasets may add keys.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

IGNORE_LABEL = 255
REQUIRED_KEYS = ("frames", "labels", "has_label", "label_index")
FLOW_KEYS = ("flow_fwd", "flow_bwd", "occ_fwd", "occ_bwd")


def validate_snippet(example: Mapping[str, Any], num_classes: int | None = None,
                     where: str = "snippet") -> None:
    """Raises ValueError naming ``where`` and the field when ``example`` breaks the format."""
    for key in REQUIRED_KEYS:
        if key not in example:
            raise ValueError(f"{where}: missing field {key!r} (has {sorted(example)})")
    frames = np.asarray(example["frames"])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{where}: 'frames' must be uint8 [T, H, W, 3]; "
                         f"got {frames.dtype} {frames.shape}")
    t, h, w = frames.shape[:3]
    labels = np.asarray(example["labels"])
    if labels.shape != (t, h, w):
        raise ValueError(f"{where}: 'labels' shape {labels.shape} != frames' [T, H, W] {(t, h, w)}")
    if num_classes is not None:
        check_labels(labels, num_classes, where=f"{where} field 'labels'")
    index = int(np.asarray(example["label_index"]))
    if not 0 <= index < t:
        raise ValueError(f"{where}: 'label_index' {index} outside [0, {t})")
    for key in FLOW_KEYS:
        if key not in example:
            continue
        arr = np.asarray(example[key])
        want = (t - 1, h, w, 2) if key.startswith("flow") else (t - 1, h, w)
        if arr.shape != want:
            raise ValueError(f"{where}: {key!r} shape {arr.shape} != expected {want}")
        if key.startswith("flow") and not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: {key!r} has non-finite values")


def check_labels(labels: np.ndarray, num_classes: int, where: str = "labels") -> None:
    """Raises ValueError if ``labels`` holds ids outside [0, num_classes) other than 255."""
    labels = np.asarray(labels)
    bad = (labels >= num_classes) & (labels != IGNORE_LABEL)
    if np.issubdtype(labels.dtype, np.signedinteger):
        bad |= labels < 0
    if np.any(bad):
        values = np.unique(labels[bad])[:10].tolist()
        raise ValueError(f"{where}: label ids {values} outside [0, {num_classes}) "
                         f"(255 is the only allowed ignore id)")
