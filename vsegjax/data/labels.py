"""Label images to class ids: id PNGs with an id map, or colour PNGs with a colour table.

Unknown ids or colours are an error naming the file and how many pixels carry each
value, unless the caller explicitly asks to map them to ignore (255).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import cv2
import numpy as np

IGNORE_LABEL = 255

# Cityscapes (and KITTI semantics): label id -> train id of the 19 classes; other ids ignored.
CITYSCAPES_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                       23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole",
                      "traffic light", "traffic sign", "vegetation", "terrain", "sky",
                      "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")


class LabelError(ValueError):
    """A label image that cannot be decoded as asked; the message names the file."""


@dataclasses.dataclass(frozen=True)
class LabelEncoding:
    """How a dataset stores labels.

    ids: raw id -> class id (255 = ignore) for single-channel label images; raw ids not
      in the map are unknown. None means the raw ids are the class ids already (values
      >= ``num_classes`` other than 255 are unknown).
    colors: (r, g, b) -> class id for colour label images (overrides ``ids``).
    num_classes: the number of classes (to check ids when ``ids`` is None).
    unknown_to_ignore: map unknown values to 255 instead of raising.
    """

    ids: Mapping[int, int] | None = None
    colors: Mapping[tuple[int, int, int], int] | None = None
    num_classes: int | None = None
    unknown_to_ignore: bool = False

    def decode(self, path: str | os.PathLike) -> np.ndarray:
        """Reads the label image at ``path`` and returns uint8 class ids [H, W]."""
        flag = cv2.IMREAD_COLOR if self.colors is not None else cv2.IMREAD_UNCHANGED
        raw = cv2.imread(os.fspath(path), flag)
        if raw is None:
            raise LabelError(f"{path}: cannot read the label image (missing, truncated or "
                             f"not an image)")
        if self.colors is not None:
            return self._decode_colors(cv2.cvtColor(raw, cv2.COLOR_BGR2RGB), path)
        if raw.ndim != 2:
            raise LabelError(f"{path}: expected a single-channel id image, got shape "
                             f"{raw.shape} (a colour label image needs a colour table)")
        return self.decode_ids(raw, path)

    def decode_ids(self, raw: np.ndarray, path: str | os.PathLike = "<array>") -> np.ndarray:
        raw = np.asarray(raw)
        if self.ids is None:
            out = raw.astype(np.int64)
            known = (out == IGNORE_LABEL) | (out >= 0) & (
                out < (self.num_classes if self.num_classes is not None else IGNORE_LABEL))
        else:
            lut = np.full(max(int(raw.max(initial=0)), max(self.ids, default=0)) + 1, -1,
                          np.int64)
            for src, dst in self.ids.items():
                lut[src] = dst
            out = lut[raw.astype(np.int64)]
            known = out >= 0
        return self._finish(out, known, raw, path, "ids")

    def _decode_colors(self, rgb: np.ndarray, path) -> np.ndarray:
        packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) \
            | rgb[..., 2].astype(np.int64)
        keys = {(r << 16) | (g << 8) | b: v for (r, g, b), v in self.colors.items()}
        out = np.full(packed.shape, -1, np.int64)
        for key, value in keys.items():
            out[packed == key] = value
        return self._finish(out, out >= 0, packed, path, "colours")

    def _finish(self, out, known, raw, path, what) -> np.ndarray:
        if not np.all(known):
            values, counts = np.unique(raw[~known], return_counts=True)
            if raw is not None and raw.ndim == 2 and what == "colours":
                shown = [f"({v >> 16},{(v >> 8) & 255},{v & 255}) x{c}"
                         for v, c in zip(values[:8], counts[:8])]
            else:
                shown = [f"{int(v)} x{c}" for v, c in zip(values[:8], counts[:8])]
            if not self.unknown_to_ignore:
                raise LabelError(
                    f"{path}: {int((~known).sum())} pixels with unknown label {what}: "
                    f"{', '.join(shown)}{' ...' if len(values) > 8 else ''} (ask for "
                    f"unknown_to_ignore to map them to 255)")
            out = np.where(known, out, IGNORE_LABEL)
        return out.astype(np.uint8)


# Cityscapes' 7 categories (its benchmark's category IoU).
CITYSCAPES_CATEGORY_NAMES: tuple[str, ...] = (
    "flat", "construction", "object", "nature", "sky", "human", "vehicle")
# Train id -> category id (index into CITYSCAPES_CATEGORY_NAMES).
CITYSCAPES_CATEGORIES: tuple[int, ...] = (
    0, 0,                # road, sidewalk -> flat
    1, 1, 1,             # building, wall, fence -> construction
    2, 2, 2,             # pole, traffic light, traffic sign -> object
    3, 3,                # vegetation, terrain -> nature
    4,                   # sky
    5, 5,                # person, rider -> human
    6, 6, 6, 6, 6, 6)    # car, truck, bus, train, motorcycle, bicycle -> vehicle
