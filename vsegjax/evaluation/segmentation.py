"""Semantic-segmentation metrics built on a confusion matrix: mean IoU, per-class and category IoU.

The confusion matrix is the accumulator: it is a sum over pixels, so matrices from
batches, devices and hosts merge by addition and the IoU is computed once at the end.
Rows are the true label, columns the prediction.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from clu import values as clu_values

from vsegjax.data.features import IGNORE_LABEL, check_labels
from vsegjax.data.labels import CITYSCAPES_CATEGORIES, CITYSCAPES_CATEGORY_NAMES  # noqa: F401

CITYSCAPES_CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle")
# The clu metric stores each count as hi * 2**_SPLIT + lo in two int32 words, so sums over
# a whole dataset stay exact without enabling jax_enable_x64 (int32 overflows at 2.1e9).
_SPLIT = 20
_LO_MASK = (1 << _SPLIT) - 1


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_inputs(pred: Any, label: Any, num_classes: int) -> None:
    """Static shape check always; label-id check only on concrete (non-traced) arrays."""
    if tuple(np.shape(pred)) != tuple(np.shape(label)):
        raise ValueError(f"prediction shape {tuple(np.shape(pred))} differs from label shape "
                         f"{tuple(np.shape(label))}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not _is_concrete(label):
        return  # Traced: ids cannot be inspected; out-of-range ids are dropped (see below).
    if isinstance(label, jax.Array):
        if not getattr(label, "is_fully_addressable", True):
            return  # Multi-host global array: each host checked its own data before.
        # Reduce on device first so only a bool crosses to the host in the common case.
        bad = jnp.any((label < 0) | ((label >= num_classes) & (label != IGNORE_LABEL)))
        if not bool(bad):
            return
    check_labels(np.asarray(label), num_classes, where="segmentation labels")


@functools.partial(jax.jit, static_argnames=("num_classes", "ignore_index"))
def _confusion_impl(pred: jax.Array, label: jax.Array, mask: jax.Array | None,
                    num_classes: int, ignore_index: int) -> jax.Array:
    pred = jnp.asarray(pred).astype(jnp.int32)
    label = jnp.asarray(label).astype(jnp.int32)
    # Count per leading-axis example, then sum: with a batch sharded over an explicit mesh
    # a single bincount (a scatter) over all pixels does not lower, and the sum over the
    # sharded axis becomes a cheap all-reduce of [C*C] counts.
    batch = label.shape[0] if label.ndim >= 2 else 1
    pred = pred.reshape(batch, -1)
    label = label.reshape(batch, -1)
    valid = ((label != ignore_index) & (label >= 0) & (label < num_classes)
             & (pred >= 0) & (pred < num_classes))
    if mask is not None:
        valid &= mask.reshape(batch, -1)
    index = jnp.where(valid, label * num_classes + pred, 0)
    counts = jax.vmap(lambda i, w: jnp.bincount(i, weights=w, length=num_classes * num_classes))(
        index, valid.astype(jnp.int32)).sum(axis=0)
    return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def _broadcast_mask(mask: Any, shape: tuple[int, ...]) -> jax.Array:
    """Mask of ``shape`` or a prefix of it (e.g. per-example [B]) -> bool array of ``shape``."""
    mask = jnp.asarray(mask).astype(bool)
    if tuple(mask.shape) != tuple(shape[:mask.ndim]):
        raise ValueError(f"mask shape {tuple(mask.shape)} is not a prefix of label shape "
                         f"{tuple(shape)}")
    return jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (len(shape) - mask.ndim)), shape)


def confusion_matrix(pred: Any, label: Any, num_classes: int, ignore_index: int = IGNORE_LABEL,
                     mask: Any | None = None) -> jax.Array:
    """int32 [C, C] pixel counts, ``cm[true, predicted]``, over any equal-shaped id arrays.

    Pixels with label ``ignore_index`` (and where ``mask`` is False) are not counted.
    Predicted ids outside [0, C) are dropped (a model's argmax never produces them).
    On concrete inputs a label id outside [0, C) other than ``ignore_index`` raises
    ValueError; under ``jax.jit`` the ids cannot be inspected and such pixels are dropped.
    Jit-able with ``num_classes`` and ``ignore_index`` static. int32 counts suit one
    batch; accumulate with :func:`confusion_metric` or in int64 on the host.
    """
    _check_inputs(pred, label, num_classes)
    if mask is not None:
        mask = _broadcast_mask(mask, tuple(np.shape(label)))
    return _confusion_impl(pred, label, mask, num_classes=num_classes,
                           ignore_index=int(ignore_index))


def iou_from_confusion(cm: Any) -> tuple[Any, Any]:
    """(mean IoU, per-class IoU [C]) from a confusion matrix (numpy or jax, any dtype).

    IoU_c = TP / (TP + FP + FN). A class absent from both labels and predictions has
    IoU NaN and is left out of the mean; a class only predicted has IoU 0 and counts.
    The mean is NaN when no class is present.
    """
    xp = jnp if isinstance(cm, jax.Array) else np
    cm = xp.asarray(cm).astype(xp.float32 if xp is jnp else np.float64)
    tp = xp.diagonal(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    present = union > 0
    per_class = xp.where(present, tp / xp.where(present, union, 1.0), xp.nan)
    n_present = present.sum()
    total = xp.where(present, per_class, 0.0).sum()
    mean = xp.where(n_present > 0, total / xp.maximum(n_present, 1), xp.nan)
    return mean, per_class


def mean_iou(pred: Any, label: Any, num_classes: int,
             ignore_index: int = IGNORE_LABEL) -> tuple[float, np.ndarray]:
    """(mean IoU as a float, per-class IoU as float64 [C], NaN for absent classes) on host data."""
    cm = np.asarray(confusion_matrix(pred, label, num_classes, ignore_index), dtype=np.int64)
    mean, per_class = iou_from_confusion(cm)
    return float(mean), per_class


def _category_matrix(class_to_category: Sequence[int], num_classes: int) -> np.ndarray:
    mapping = np.asarray(class_to_category, dtype=np.int64)
    if mapping.shape != (num_classes,):
        raise ValueError(f"class_to_category has {mapping.size} entries but the confusion "
                         f"matrix has {num_classes} classes")
    if mapping.min() < 0:
        raise ValueError(f"class_to_category has negative category ids: {mapping.tolist()}")
    onehot = np.zeros((num_classes, int(mapping.max()) + 1), dtype=np.int64)
    onehot[np.arange(num_classes), mapping] = 1
    return onehot


def category_confusion(cm: Any, class_to_category: Sequence[int]) -> Any:
    """Sums a [C, C] class confusion matrix into [K, K] categories (``M^T cm M``).

    ``class_to_category[c]`` is the category id of class c; K = max id + 1.
    """
    num_classes = np.shape(cm)[0]
    onehot = _category_matrix(class_to_category, num_classes)
    if isinstance(cm, jax.Array):
        onehot = jnp.asarray(onehot, dtype=cm.dtype)
        return onehot.T @ cm @ onehot
    return onehot.T @ np.asarray(cm, dtype=np.int64) @ onehot


def category_iou(cm: Any, class_to_category: Sequence[int] = CITYSCAPES_CATEGORIES
                 ) -> tuple[Any, Any]:
    """(mean, per-category IoU) from a class confusion matrix; defaults to Cityscapes categories."""
    return iou_from_confusion(category_confusion(cm, class_to_category))


@flax.struct.dataclass
class ConfusionMatrixMetric(clu_metrics.Metric):
    """clu metric accumulating a confusion matrix; use :func:`confusion_metric` to get one.

    ``num_classes`` and ``ignore_index`` are class attributes (static for jit), so every
    metric of one class has the same pytree structure and merges/reduces across steps,
    devices and hosts by adding counts. Counts are exact up to ~2**51 pixels per cell.
    """

    hi: jax.Array  # [C, C] int32, count // 2**20
    lo: jax.Array  # [C, C] int32, count % 2**20

    num_classes: ClassVar[int | None] = None
    ignore_index: ClassVar[int] = IGNORE_LABEL

    @classmethod
    def _num_classes(cls) -> int:
        if cls.num_classes is None:
            raise ValueError("ConfusionMatrixMetric needs a static class count: use "
                             "confusion_metric(num_classes) to make the metric class")
        return cls.num_classes

    @classmethod
    def from_confusion(cls, cm: Any) -> "ConfusionMatrixMetric":
        """Wraps an int32 [C, C] confusion matrix (counts below 2**31)."""
        cm = jnp.asarray(cm, dtype=jnp.int32)
        return cls(hi=cm >> _SPLIT, lo=cm & _LO_MASK)

    @classmethod
    def from_model_output(cls, predictions: Any, labels: Any, mask: Any | None = None,
                          **_: Any) -> "ConfusionMatrixMetric":
        """From predicted ids and labels of equal shape (take the argmax of logits first)."""
        return cls.from_confusion(confusion_matrix(predictions, labels, cls._num_classes(),
                                                   cls.ignore_index, mask=mask))

    @classmethod
    def empty(cls) -> "ConfusionMatrixMetric":
        zeros = jnp.zeros((cls._num_classes(),) * 2, jnp.int32)
        return cls(hi=zeros, lo=zeros)

    def merge(self, other: "ConfusionMatrixMetric") -> "ConfusionMatrixMetric":
        lo = self.lo + other.lo  # < 2**21, no overflow; carry the excess into hi.
        return type(self)(hi=self.hi + other.hi + (lo >> _SPLIT), lo=lo & _LO_MASK)

    def confusion(self) -> np.ndarray:
        """The exact accumulated confusion matrix as int64 numpy (host only)."""
        hi = np.asarray(self.hi, dtype=np.int64)
        return (hi << _SPLIT) + np.asarray(self.lo, dtype=np.int64)

    def compute(self) -> dict[str, jax.Array]:
        """{"miou": scalar, "per_class_iou": [C]} (float32; NaN for absent classes)."""
        cm = self.hi.astype(jnp.float32) * float(1 << _SPLIT) + self.lo.astype(jnp.float32)
        mean, per_class = iou_from_confusion(cm)
        return {"miou": mean, "per_class_iou": per_class}

    def compute_value(self) -> clu_values.Scalar:
        """The mean IoU as a clu Scalar (``Collection.compute_values`` needs one scalar)."""
        return clu_values.Scalar(self.compute()["miou"])


@functools.lru_cache(maxsize=None)
def confusion_metric(num_classes: int,
                     ignore_index: int = IGNORE_LABEL) -> type[ConfusionMatrixMetric]:
    """A :class:`ConfusionMatrixMetric` subclass for ``num_classes`` classes.

    Cached, so repeated calls return the same class (needed for merging and jit caching).
    Usable in a ``clu.metrics.Collection``: ``Collection.create(seg=confusion_metric(19))``
    with model outputs ``predictions=..., labels=...`` (and optional ``mask``).
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")

    @flax.struct.dataclass
    class _ConfusionMatrixMetric(ConfusionMatrixMetric):
        pass

    _ConfusionMatrixMetric.num_classes = int(num_classes)
    _ConfusionMatrixMetric.ignore_index = int(ignore_index)
    _ConfusionMatrixMetric.__name__ = _ConfusionMatrixMetric.__qualname__ = (
        f"ConfusionMatrixMetric{int(num_classes)}")
    return _ConfusionMatrixMetric
