"""Warp-Refine's host batch function: windows of k + 1 frames from the labelled one
(the cycle of sec. 3; picklable, no JAX)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vsegjax.data.labels import IGNORE_LABEL
from vsegjax.models.flow_providers import OpenCVFlow



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
