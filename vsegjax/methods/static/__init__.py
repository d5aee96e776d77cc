"""Static (per-frame) segmentation: the baseline every method wraps and GRFP's stage 1.

  task.py   ``StaticSegmentationTask`` (one labelled frame per example, L_seg with the
            optional boundary relaxation) and its report (class mIoU, per-class IoU,
            against a positional prior)

The segmenters themselves (ResNet + PSP / DeepLabv3+, the small net) are shared building
blocks in ``vsegjax.models``.
"""
