"""Evaluation metrics: mIoU (confusion matrices), flow EPE / Fl, temporal consistency.

All metrics keep additive accumulators (confusion matrices, sums, counts) so results
over a dataset merge across batches, devices and hosts by addition.
"""

from vsegjax.evaluation.flow import (
    FlowErrorAccumulator,
    FlowErrorMetric,
    endpoint_error,
    flow_error_sums,
    metrics_from_sums,
)
from vsegjax.evaluation.segmentation import (
    CITYSCAPES_CATEGORIES,
    CITYSCAPES_CATEGORY_NAMES,
    CITYSCAPES_CLASS_NAMES,
    ConfusionMatrixMetric,
    category_confusion,
    category_iou,
    confusion_matrix,
    confusion_metric,
    iou_from_confusion,
    mean_iou,
)
from vsegjax.evaluation.scores import ConfusionMatrices
from vsegjax.evaluation.temporal import (
    TemporalConsistencyResult,
    combine_consistency,
    temporal_consistency,
)

__all__ = [
    "CITYSCAPES_CATEGORIES",
    "CITYSCAPES_CATEGORY_NAMES",
    "CITYSCAPES_CLASS_NAMES",
    "ConfusionMatrices",
    "ConfusionMatrixMetric",
    "FlowErrorAccumulator",
    "FlowErrorMetric",
    "TemporalConsistencyResult",
    "category_confusion",
    "category_iou",
    "combine_consistency",
    "confusion_matrix",
    "confusion_metric",
    "endpoint_error",
    "flow_error_sums",
    "iou_from_confusion",
    "mean_iou",
    "metrics_from_sums",
    "temporal_consistency",
]
from vsegjax.evaluation.baselines import PositionalPrior
