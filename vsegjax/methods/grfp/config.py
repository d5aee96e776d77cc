"""GRFP's config blocks, each field's default in one place (``core.config``)."""

from __future__ import annotations

from typing import Any

import ml_collections

from vsegjax.core import config as core_config


def grfp_block(**fields: Any) -> ml_collections.ConfigDict:
    """The ``grfp`` block (``GRFPTask``, ``make_video_model``)."""
    return core_config.block(dict(
        mode="fwbw",          # forward | backward | fwbw (sec. 3.2)
        kernel_size=7,        # the STGRU's convolutions (the paper's 7x7)
        identity_init=True,   # W_hh starts as the identity: h_t = warped h_{t-1}
        center_inputs=True,   # per-class logits centred before the cell (docs/stgru.md)
        remat=False,          # recompute the static net in the backward pass
        update_gate="per_class",  # stgru.UPDATE_GATES
        dtype=None,           # the STGRU's dtype; None = the static net's model.dtype
        train_static=False,   # fine-tune the static net too (the paper's default)
        # A zero or absent weight: the term is not computed (task.LOSS_KEYS).
        loss_weights=dict(L_fwbw=1.0, L_fwd=1.0, L_bwd=1.0)), fields, "grfp")


def flow_block(source: str = "farneback", **fields: Any) -> ml_collections.ConfigDict:
    """The ``flow`` block: a flow provider (``models.flow_providers.make_flow_provider``
    holds its fields and their defaults; a FlowNetS's come from its checkpoint)."""
    return ml_collections.ConfigDict(dict(source=source, **fields))


def template_blocks() -> dict[str, Any]:
    """What ``GRFPTask`` adds to the segmenter's template."""
    return dict(grfp=grfp_block(), flow=flow_block(num_workers=0),
                # frames (before, after) the labelled one (the synthetic config's T = 7)
                input=dict(window=(4, 2)))
