"""EFC's config blocks, each field's default in one place (``core.config``)."""

from __future__ import annotations

from typing import Any

import ml_collections

from vsegjax.core import config as core_config
from vsegjax.methods.efc.losses import DEFAULT_WEIGHTS
from vsegjax.models.flownet import flow_decoder_config


def efc_block(**fields: Any) -> ml_collections.ConfigDict:
    """The ``efc`` block (``EFCTask``, ``make_efc_model``; the fields are listed in
    ``methods/efc/task.py``'s docstring)."""
    return core_config.block(dict(
        mode="joint", flow_branch="shared", fixed_flow=False,
        corr_feature="layer3", skip_features=("layer1",),
        flow=flow_decoder_config(),  # read whole: fields it lacks take these defaults
        loss_weights=dict(DEFAULT_WEIGHTS),  # eq. (9)'s lambdas
        pairs_per_snippet=4, dt_range=(1, 5), labelled_share=0.5, labels="annotated",
        # Pairs per forward/backward pass (0: all): the step's loss is the mean over
        # passes, each recomputed in the backward pass, so one pass's activations live.
        pairs_per_pass=0,
        # A data block of extra unlabelled snippets (+UD), or None.
        unlabelled_data=None, unlabelled_split="train", unlabelled_batch_size=2,
        occlusion_in_cons=True, occlusion_in_pm=True, seg_occlusion=True,
        cons_occlusion_grad=False,  # True: O_est collapses to 1 (losses.py)
        cons_flow_grad=True,
        # L_cons on per-pixel standardised features (losses.py: consistency_loss);
        # measured: worse at step 500 (mIoU 0.364 vs 0.399, docs/efc.md).
        cons_normalize=False,
        # L_cons on the shared features (eq. 2) or on the class probabilities (docs/efc.md).
        cons_on="features",
        # exp(-alpha |dI|) on [0, 1] images: 10 keeps L_sm smooth inside regions and free
        # at edges (with 1 the weight is ~1 everywhere and L_sm flattens small motions).
        edge_alpha=10.0,
        num_scales=3, scale_weights=(1.0, 0.5, 0.25)), fields, "efc")


def eval_block(farneback: bool = True, **fields: Any) -> ml_collections.ConfigDict:
    """``core.config.eval_block`` and ``farneback``: score Farneback's flow beside EFC's
    (where the data has true flow)."""
    out = core_config.eval_block(**fields)
    out.farneback = farneback
    return out


def template_blocks() -> dict[str, Any]:
    """What ``EFCTask`` adds to the segmenter's template."""
    return dict(efc=efc_block(), eval=dict(farneback=True))
