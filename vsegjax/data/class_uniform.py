"""Class-uniform sampling (VPLR): pick a class uniformly, then a snippet whose labelled
frame contains it, then a crop centred on one of its pixels, so rare classes are seen
about as often as common ones.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import grain
import numpy as np
import tqdm

from vsegjax.data import augment as augment_lib


def class_index(source: Sequence[Mapping[str, Any]], num_classes: int,
                label_frame: str | int = "annotated") -> list[np.ndarray]:
    """For each class, the indices of the examples whose labelled frame contains it.

    One pass over the source (decoding every label); ``label_frame`` "annotated" reads
    ``label_index``, an int reads that frame, "any" uses every labelled frame.
    """
    members: list[list[int]] = [[] for _ in range(num_classes)]
    for i in tqdm.trange(len(source), desc="class index", unit="snippet", leave=False):
        ex = source[i]
        labels = np.asarray(ex["labels"])
        if label_frame == "any":
            present = np.unique(labels[np.asarray(ex["has_label"], bool)])
        else:
            t = int(np.asarray(ex["label_index"])) if label_frame == "annotated" else int(label_frame)
            present = np.unique(labels[t])
        for c in present[present < num_classes]:
            members[int(c)].append(i)
    return [np.asarray(m, np.int64) for m in members]


class ClassUniformTransform(grain.transforms.RandomMap):
    """Maps a position in the epoch to an example drawn class-uniformly (picklable)."""

    def __init__(self, source, index: list[np.ndarray], window, label_frame,
                 augment: augment_lib.Augment | None, check):
        self.source = source
        self.index = index
        self.classes = np.asarray([c for c, m in enumerate(index) if len(m)], np.int64)
        if not len(self.classes):
            raise ValueError("class-uniform sampling: no labelled pixel of any class")
        self.window = window
        self.label_frame = label_frame
        self.augment = augment
        self.check = check  # the plain per-snippet transform's label check

    def random_map(self, position: int, rng: np.random.Generator) -> dict[str, Any]:
        del position
        c = int(self.classes[rng.integers(len(self.classes))])
        ex = {k: np.asarray(v) for k, v in self.source[int(rng.choice(self.index[c]))].items()}
        self.check(ex)
        if self.window is not None:
            ex = augment_lib.sample_window(ex, *self.window, self.label_frame, rng)
        if self.augment is None:
            return augment_lib.finalize(ex)
        return self.augment.apply(ex, rng, focus_class=c)
