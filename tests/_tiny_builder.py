"""Test helpers: fake moving-image snippets with exact flow, and a tiny TFDS builder.

The builder lives in an importable module (TFDS cannot build classes defined in
``__main__``). Importing this module registers ``tiny_video_snippets`` with TFDS.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def default_shifts(num_frames: int) -> list[tuple[int, int]]:
    """Per-pair integer motion (dx, dy), different for every pair."""
    return [(1 + t % 3, t % 2) for t in range(num_frames - 1)]


def make_snippet(snippet_id: int = 0, num_frames: int = 6, height: int = 24, width: int = 32,
                 shifts: Sequence[tuple[int, int]] | None = None,
                 labelled: Sequence[int] | None = (1, 3), label_index: int = 3,
                 num_classes: int = 5) -> dict[str, np.ndarray]:
    """A snippet in the ``features.py`` format whose content moves by ``shifts[t]``
    (integer pixels) from frame t to t+1, so the stored flows and occlusions are exact.

    ``labelled=None`` labels every frame; unlabelled frames hold 255.
    """
    rng = np.random.default_rng(snippet_id)
    shifts = default_shifts(num_frames) if shifts is None else list(shifts)
    assert len(shifts) == num_frames - 1
    offsets = np.concatenate([[[0, 0]], np.cumsum(np.asarray(shifts, int), axis=0)])
    margin = int(np.abs(offsets).max()) + 2
    big_h, big_w = height + 2 * margin, width + 2 * margin
    # Smooth colour texture plus blobby class regions, both moving with the content.
    coarse = rng.random((big_h // 4 + 1, big_w // 4 + 1, 3)).astype(np.float32)
    base = cv2.resize(coarse, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    base = np.clip(base * 255, 0, 255).astype(np.uint8)
    # Class regions: Voronoi cells of a few random seeds (label maps are piecewise constant).
    seeds = rng.random((5, 2)) * [big_h, big_w]
    gy, gx = np.mgrid[:big_h, :big_w]
    dist = (gy[..., None] - seeds[:, 0]) ** 2 + (gx[..., None] - seeds[:, 1]) ** 2
    base_labels = (np.argmin(dist, axis=-1) % num_classes).astype(np.uint8)

    frames, labels = [], []
    for ox, oy in offsets:
        y0, x0 = margin - oy, margin - ox
        frames.append(base[y0:y0 + height, x0:x0 + width])
        labels.append(base_labels[y0:y0 + height, x0:x0 + width])
    frames = np.stack(frames)
    labels = np.stack(labels)
    has_label = np.ones(num_frames, bool)
    if labelled is not None:
        has_label[:] = False
        has_label[list(labelled)] = True
        labels[~has_label] = 255

    ys, xs = np.mgrid[:height, :width]
    flow_fwd = np.zeros((num_frames - 1, height, width, 2), np.float32)
    occ_fwd = np.zeros((num_frames - 1, height, width), np.uint8)
    occ_bwd = np.zeros_like(occ_fwd)
    for t, (dx, dy) in enumerate(shifts):
        flow_fwd[t, ..., 0], flow_fwd[t, ..., 1] = dx, dy
        occ_fwd[t] = ~((xs + dx >= 0) & (xs + dx < width) & (ys + dy >= 0) & (ys + dy < height))
        occ_bwd[t] = ~((xs - dx >= 0) & (xs - dx < width) & (ys - dy >= 0) & (ys - dy < height))
    return {
        "frames": frames,
        "labels": labels,
        "has_label": has_label,
        "label_index": np.int32(label_index),
        "flow_fwd": flow_fwd,
        "flow_bwd": -flow_fwd,
        "occ_fwd": occ_fwd,
        "occ_bwd": occ_bwd,
        "snippet_id": np.int64(snippet_id),
    }


TINY_SHAPE = dict(num_frames=4, height=8, width=12)
TINY_SPLITS = {"train": 6, "test": 3}

try:
    import tensorflow_datasets as tfds
except ImportError:  # pragma: no cover - the tests importing the builder skip instead
    tfds = None

if tfds is not None:

    class TinyVideoSnippets(tfds.core.GeneratorBasedBuilder):
        """A handful of 4-frame 8x12 snippets; build with file_format="array_record"."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Test fixture."}

        def _info(self):
            t, h, w = TINY_SHAPE["num_frames"], TINY_SHAPE["height"], TINY_SHAPE["width"]
            tensor = tfds.features.Tensor
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "frames": tensor(shape=(t, h, w, 3), dtype=np.uint8),
                "labels": tensor(shape=(t, h, w), dtype=np.uint8),
                "has_label": tensor(shape=(t,), dtype=np.bool_),
                "label_index": tensor(shape=(), dtype=np.int32),
                "flow_fwd": tensor(shape=(t - 1, h, w, 2), dtype=np.float32),
                "flow_bwd": tensor(shape=(t - 1, h, w, 2), dtype=np.float32),
                "occ_fwd": tensor(shape=(t - 1, h, w), dtype=np.uint8),
                "occ_bwd": tensor(shape=(t - 1, h, w), dtype=np.uint8),
                "snippet_id": tensor(shape=(), dtype=np.int64),
            }))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split, n)
                    for split, n in TINY_SPLITS.items()}

        def _generate_examples(self, split, num):
            offset = 0 if split == "train" else 1000
            for i in range(num):
                sid = offset + i
                yield sid, make_snippet(sid, labelled=(1, 2), label_index=2, **TINY_SHAPE)
