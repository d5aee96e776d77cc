"""VPLR's and SDC-Net's config blocks, each field's default in one place (``core.config``)."""

from __future__ import annotations

from typing import Any

import ml_collections

from vsegjax.core import config as core_config
from vsegjax.methods.vplr.sdc_losses import DEFAULT_WEIGHTS
from vsegjax.methods.vplr.sdc_model import sdc_config


def sdc_block(**fields: Any) -> ml_collections.ConfigDict:
    """The ``sdc`` block (``SDCTask``): the model's fields (``sdc_model.sdc_config``), the
    loss weights (a zero or absent weight: not computed) and the windows drawn from each
    snippet per step."""
    return core_config.block(dict(sdc_config().to_dict(), loss_weights=dict(DEFAULT_WEIGHTS),
                                  windows_per_snippet=1), fields, "sdc")


def vplr_block(**fields: Any) -> ml_collections.ConfigDict:
    """The ``vplr`` block (``VPLRTask``)."""
    return core_config.block(dict(
        mode="joint",         # none | label (label propagation) | joint (image + label)
        k=3,                  # pairs from frames up to k away from the labelled one
        motion="dis",         # host flow (farneback | dis) or "sdc": a trained SDC run's
        sdc_workdir="",       # that SDC run, for motion="sdc"
        propagated_batch_size=4,  # propagated pairs per step, beside input.batch_size
        # Propagate at the dataset's resolution ("native", then resize) or at the training
        # resolution ("train").
        propagate_at="native"), fields, "vplr")


def vplr_template_blocks() -> dict[str, Any]:
    """What ``VPLRTask`` adds to the segmenter's template: its block, and where boundary
    label relaxation applies ("all" labels or the "propagated" pairs only)."""
    return dict(vplr=vplr_block(), loss=dict(relaxation_on="all"))


def sdc_template_blocks() -> dict[str, Any]:
    """What ``SDCTask`` adds to the engine's template (the model block only sizes the
    pipeline's label handling: SDC-Net reads no labels)."""
    return dict(sdc=sdc_block(), model=dict(num_classes=None))
