"""Shared losses: plain functions on arrays, one per term; tasks weight and log them by
name. A method's own terms (EFC's, SDC's, Warp-Refine's) live in its package."""

from vsegjax.losses.relaxation import relaxed_nll, segmentation_loss
from vsegjax.losses.segmentation import cross_entropy, nll_loss, pixel_accuracy

__all__ = ["cross_entropy", "nll_loss", "pixel_accuracy", "relaxed_nll", "segmentation_loss"]
