"""GRFP's host batch function: classical (OpenCV) flow computed in the data workers.

Batch functions run on NumPy batches in grain's workers, so they are picklable and never
touch JAX."""

from __future__ import annotations

import numpy as np

from vsegjax.models import flow_providers



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
