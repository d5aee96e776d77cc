"""One confusion-matrix accumulator for every method's evaluation over a dataset.

Each evaluation adds predictions batch by batch under a key (a method name, or a tuple
such as (method, k)) and reads mean and per-class IoU at the end; the counts are int64
sums, so the result does not depend on how the data was batched (as scenic's
``global_metrics_fn`` computes metrics once over the whole set).
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

from vsegjax.evaluation.pooling import sum_over_processes
from vsegjax.evaluation.segmentation import confusion_matrix, iou_from_confusion


class ConfusionMatrices:
    """int64 [C, C] confusion matrices (``cm[true, predicted]``) by key."""

    def __init__(self, num_classes: int, keys: Sequence[Hashable] = ()):
        self.num_classes = int(num_classes)
        self.cms: dict[Hashable, np.ndarray] = {}
        for key in keys:
            self._matrix(key)

    def _matrix(self, key: Hashable) -> np.ndarray:
        if key not in self.cms:
            self.cms[key] = np.zeros((self.num_classes, self.num_classes), np.int64)
        return self.cms[key]

    def add(self, key: Hashable, pred: Any, label: Any, valid: Any | None = None
            ) -> np.ndarray:
        """Counts ``pred`` against ``label`` (equal-shaped class ids, 255 = ignore); with
        ``valid`` (a mask over the leading axis) only those rows. Returns the counts added."""
        pred, label = np.asarray(pred), np.asarray(label)
        if valid is not None:
            valid = np.asarray(valid, bool)
            pred, label = pred[valid], label[valid]
        cm = np.asarray(confusion_matrix(pred, label, self.num_classes), np.int64)
        self._matrix(key)[...] += cm
        return cm

    def add_counts(self, key: Hashable, cm: np.ndarray) -> None:
        """Adds counts already computed (e.g. ``add``'s return for a subset)."""
        self._matrix(key)[...] += np.asarray(cm, np.int64)

    def pooled(self) -> "ConfusionMatrices":
        """The matrices summed over every process (``vsegjax.evaluation.pooling``); each
        process must hold the same keys."""
        names = {repr(k): k for k in self.cms}
        summed = sum_over_processes({n: self.cms[k] for n, k in names.items()})
        out = ConfusionMatrices(self.num_classes)
        out.cms = {k: summed[n] for n, k in names.items()}
        return out

    def miou(self, key: Hashable) -> float:
        """Mean IoU over the classes present (NaN when none is)."""
        return float(iou_from_confusion(self._matrix(key))[0])

    def per_class(self, key: Hashable, names: Sequence[str] | None = None
                  ) -> dict[str, float | None]:
        """{class name: IoU} with None for a class absent from labels and predictions."""
        _, per_class = iou_from_confusion(self._matrix(key))
        names = list(names) if names else [str(k) for k in range(self.num_classes)]
        return {n: None if np.isnan(v) else float(v) for n, v in zip(names, per_class)}
