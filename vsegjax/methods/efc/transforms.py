"""EFC's host batch function: keep the labels the method may use (picklable, no JAX)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vsegjax.data.labels import IGNORE_LABEL



# Per-pair keys of the snippet format that the EFC step does not use (it learns its own
# flow); dropped on the host so they are not sent to the devices.
UNUSED_KEYS = ("flow_fwd", "flow_bwd", "occ_fwd", "occ_bwd", "degraded", "snippet_id")


class PrepareSnippets:
    """Picklable host batch function: keeps the labels the method may use.

    ``labels="annotated"``: only each snippet's ``label_index`` frame keeps its labels (as in
    Cityscapes, where one frame of 30 is labelled); ``"all"``: every frame with
    ``has_label``; ``"none"``: no labels (unlabelled video). Unused per-pair keys go.
    """

    def __init__(self, labels: str = "annotated"):
        if labels not in ("annotated", "all", "none"):
            raise ValueError(f"config field efc.labels: {labels!r}; choose annotated, all or none")
        self.labels = labels

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k not in UNUSED_KEYS}
        if "labels" in out:
            labels = np.array(out["labels"], copy=True)
        else:  # video without any labels (e.g. a user's unlabelled sequences)
            labels = np.full(np.shape(out["frames"])[:4], IGNORE_LABEL, np.int32)
            out.setdefault("label_pos", np.zeros(labels.shape[0], np.int32))
        b, t = labels.shape[:2]
        keep = np.zeros((b, t), bool)
        if self.labels == "annotated":
            keep[np.arange(b), np.asarray(out["label_pos"])] = True
        elif self.labels == "all":
            keep = np.asarray(out.get("has_label", np.ones((b, t), bool)), bool)
        labels[~keep] = IGNORE_LABEL
        out["labels"] = labels
        out["labelled"] = keep.any(axis=1)
        out["has_label"] = keep
        return out
