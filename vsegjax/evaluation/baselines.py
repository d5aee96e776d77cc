"""Reference predictors that need no learning, so a trained model's score can be judged."""

from __future__ import annotations

from typing import Iterable

import numpy as np

IGNORE_LABEL = 255


class PositionalPrior:
    """Predicts, at every pixel position, the class most often there in the training labels.

    A segmenter that does not beat it has learned little beyond the dataset's layout
    (road at the bottom, sky at the top).
    """

    def __init__(self, num_classes: int, shape: tuple[int, int]):
        self.num_classes = num_classes
        self.counts = np.zeros(tuple(shape) + (num_classes,), np.int64)

    def update(self, labels: np.ndarray) -> None:
        """Adds label maps [..., H, W] (255 ignored)."""
        labels = np.asarray(labels).reshape((-1,) + self.counts.shape[:2])
        for c in range(self.num_classes):
            self.counts[..., c] += np.sum(labels == c, axis=0)

    def fit(self, label_maps: Iterable[np.ndarray]) -> "PositionalPrior":
        for labels in label_maps:
            self.update(labels)
        return self

    def predict(self) -> np.ndarray:
        """[H, W] class ids."""
        return np.argmax(self.counts, axis=-1).astype(np.int32)
