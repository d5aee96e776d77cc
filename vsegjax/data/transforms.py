"""Host-side pieces of the input pipeline that tasks plug in.

Batch functions (``pipeline.make_dataset(batch_fn=...)``) run on NumPy batches in the
grain workers, so they are picklable classes or module-level functions and never touch
JAX; sources and iterators adapt what a task feeds next to the pipeline.

  HostFlow / flow_batch_fn   classical (OpenCV) flow computed on the host (GRFP)
  CycleWindows               windows of k + 1 frames from the labelled one (Warp-Refine)
  PrepareSnippets            keep the labels the method may use (EFC)
  Tagged, PairSource         propagated pairs as snippets, tagged per row (VPLR)
  frames_only(_eval)         frames alone (SDC, self-supervised)
  MixedIterator              one batch of each of two streams per step (EFC +UD, VPLR)
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from vsegjax.data.labels import IGNORE_LABEL
from vsegjax.models import flow_providers
from vsegjax.models.flow_providers import OpenCVFlow


class HostFlow:
    """Picklable batch function: classical flow computed on the host in the data workers."""

    def __init__(self, provider: flow_providers.OpenCVFlow):
        self.provider = provider

    def __call__(self, batch: dict) -> dict:
        fwd, bwd = self.provider.flows(batch["frames"])
        out = dict(batch, flow_fwd=np.asarray(fwd, np.float32),
                   flow_bwd=np.asarray(bwd, np.float32))
        # The dataset's exact flow stays available to measure temporal consistency.
        for key in ("flow_fwd", "flow_bwd"):
            if key in batch:
                out[f"{key}_gt"] = batch[key]
        return out


def flow_batch_fn(provider: flow_providers.FlowProvider):
    """OpenCV flow replaces the dataset's flow in the input pipeline; None otherwise."""
    if isinstance(provider, flow_providers.OpenCVFlow):
        return HostFlow(provider)
    return None


class CycleWindows:
    """Host batch_fn: snippets -> windows of ``k + 1`` frames starting at the labelled frame.

    The window runs forward in time when the snippet has ``k`` frames after the labelled
    one, else backward (frames reversed); flows of the window come from ``flow``.
    ``labels``: "annotated" keeps only the start frame's label, "all" keeps every label
    (direct supervision).
    """

    def __init__(self, k: int, flow: str = "dis", labels: str = "annotated"):
        if k < 1:
            raise ValueError(f"config field warp_refine.k: must be >= 1; got {k}")
        if labels not in ("annotated", "all"):
            raise ValueError(f"config field warp_refine.labels: 'annotated' or 'all'; got "
                             f"{labels!r}")
        self.k, self.labels = int(k), labels
        self.flow = OpenCVFlow(flow) if flow in ("dis", "farneback") else None
        if self.flow is None and flow != "dataset":
            raise ValueError(f"config field warp_refine.flow: 'dis', 'farneback' or "
                             f"'dataset'; got {flow!r}")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        frames, labels = np.asarray(batch["frames"]), np.asarray(batch["labels"])
        b, t = frames.shape[:2]
        pos = np.asarray(batch.get("label_pos", batch.get("label_index")))
        out_f, out_l, fwd, bwd = [], [], [], []
        for i in range(b):
            a = int(pos[i])
            if a + self.k < t:
                idx = np.arange(a, a + self.k + 1)
            elif a - self.k >= 0:
                idx = np.arange(a, a - self.k - 1, -1)
            else:
                raise ValueError(f"snippet of {t} frames labelled at {a} has no {self.k} "
                                 f"frames on either side (config field warp_refine.k)")
            out_f.append(frames[i, idx])
            lab = labels[i, idx].copy()
            if self.labels == "annotated":
                lab[1:] = IGNORE_LABEL
            out_l.append(lab)
            if self.flow is None:  # dataset flow, re-indexed for the window's direction
                if idx[1] > idx[0]:
                    fwd.append(batch["flow_fwd"][i, idx[:-1]])
                    bwd.append(batch["flow_bwd"][i, idx[:-1]])
                else:
                    fwd.append(batch["flow_bwd"][i, idx[1:]])
                    bwd.append(batch["flow_fwd"][i, idx[1:]])
        out = {"frames": np.stack(out_f), "labels": np.stack(out_l)}
        if self.flow is not None:
            f, bw = self.flow.flows(out["frames"])
            out["flow_fwd"], out["flow_bwd"] = np.asarray(f), np.asarray(bw)
        else:
            out["flow_fwd"], out["flow_bwd"] = np.stack(fwd), np.stack(bwd)
        return out


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
