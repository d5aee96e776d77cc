"""Host-side pieces of the input pipeline that several tasks plug in (a method's own
batch functions live in its package: GRFP's host flow, EFC's label selection,
Warp-Refine's cycle windows).

Batch functions (``pipeline.make_dataset(batch_fn=...)``) run on NumPy batches in the
grain workers, so they are picklable classes or module-level functions and never touch
JAX; sources and iterators adapt what a task feeds next to the pipeline.

  Tagged, PairSource         propagated pairs as snippets, tagged per row (VPLR)
  frames_only(_eval)         frames alone (SDC, self-supervised)
  MixedIterator              one batch of each of two streams per step (EFC +UD, VPLR)
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np


class Tagged:
    """Keeps what the segmentation loss reads (the two streams carry different extra
    fields) and tags each row as propagated or not (picklable for grain workers)."""

    def __init__(self, propagated: bool):
        self.propagated = propagated

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(batch["frames"])
        return {"frames": batch["frames"], "labels": batch["labels"],
                "propagated": np.full(n, self.propagated)}


class PairSource:
    """Propagated pairs as one-frame snippets for ``pipeline.make_dataset``."""

    def __init__(self, pairs: dict[str, np.ndarray]):
        self.frames, self.labels = pairs["frames"], pairs["labels"]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"frames": self.frames[i][None], "labels": self.labels[i][None],
                "has_label": np.ones(1, bool), "label_index": np.int32(0),
                "snippet_id": np.int64(i)}


def frames_only(batch: dict[str, Any]) -> dict[str, Any]:
    """Host batch function: keeps the frames (self-supervised; labels and flows unused)."""
    return {"frames": batch["frames"]}


def frames_only_eval(batch: dict[str, Any]) -> dict[str, Any]:
    """``frames_only`` that keeps the ``valid`` rows mask of ``data.eval_batches``."""
    return {"frames": batch["frames"], "valid": batch["valid"]}


class MixedIterator:
    """Concatenates a batch of each iterator per step; checkpointable like grain's.

    ``get_state()`` / ``set_state()`` hold both iterators' positions (JSON-serialisable
    dicts), so an interrupted run resumes both streams where they were.
    """

    def __init__(self, labelled: Iterator[dict], unlabelled: Iterator[dict]):
        self.labelled = labelled
        self.unlabelled = unlabelled

    def __iter__(self) -> "MixedIterator":
        return self

    def __next__(self) -> dict[str, Any]:
        a, b = next(self.labelled), next(self.unlabelled)
        missing = set(a) ^ set(b)
        if missing:
            raise ValueError(f"labelled and unlabelled batches have different keys: "
                             f"{sorted(missing)} (do both datasets have the same fields?)")
        for key in a:
            if np.shape(a[key])[1:] != np.shape(b[key])[1:]:
                raise ValueError(f"labelled and unlabelled batches differ in field {key!r}: "
                                 f"{np.shape(a[key])} vs {np.shape(b[key])} (same snippet "
                                 f"length and crop size needed)")
        return {k: np.concatenate([a[k], b[k]]) for k in a}

    def get_state(self) -> dict[str, Any]:
        return {"labelled": self.labelled.get_state(),
                "unlabelled": self.unlabelled.get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.labelled.set_state(state["labelled"])
        self.unlabelled.set_state(state["unlabelled"])
