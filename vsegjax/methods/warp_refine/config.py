"""Warp-Refine's config blocks, each field's default in one place (``core.config``)."""

from __future__ import annotations

from typing import Any

import ml_collections

from vsegjax.core import config as core_config


def warp_refine_block(**fields: Any) -> ml_collections.ConfigDict:
    """The ``warp_refine`` block (``WarpRefineTask``)."""
    return core_config.block(dict(
        k=3,                 # cycle length: k steps forward, k back
        flow="dis",          # host flow for training and evaluation (farneback | dis)
        labels="annotated",  # sparse: only the window's first frame keeps its label
        refiner_width=32, refiner_depth=2,
        prior="segmenter",   # task.PRIORS: a static segmenter's probabilities, or "none"
        strides=(1,),        # frame steps a one-video training cycle may take (video.py)
        # L_warp > 0 pulls the refiner towards plain soft warping (off, as in the paper).
        loss_weights=dict(L_cycle=1.0, L_direct=1.0, L_warp=0.0, L_prior=0.0)),
        fields, "warp_refine")


_EVAL = dict(num_videos=24, num_frames=9, video_seed=7, sdc_workdir="")


def eval_block(**fields: Any) -> ml_collections.ConfigDict:
    """``core.config.eval_block`` and the report's rendered videos (``report.py``):
    how many, of how many frames, their seed, and an SDC run whose motion to score too."""
    own = {k: fields.pop(k) for k in list(fields) if k in _EVAL}
    out = core_config.eval_block(**fields)
    out.update({**_EVAL, **own})
    return out


def template_blocks() -> dict[str, Any]:
    """What ``WarpRefineTask`` adds to the segmenter's template."""
    return dict(warp_refine=warp_refine_block(), eval=dict(_EVAL))
