"""Optical-flow metrics: end-point error (all / non-occluded pixels) and the KITTI outlier rate Fl.

Every metric is a ratio of sums, so per-batch sums add up over a dataset and across
hosts; the ratios are taken once at the end (a mean of per-image means would weight
small images like large ones).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from clu import values as clu_values

from vsegjax.ops import check_flow

SUM_KEYS = ("epe_all_sum", "count_all", "epe_noc_sum", "count_noc", "outliers_sum",
            "outliers_noc_sum")
# KITTI 2015: a pixel is an outlier when its EPE exceeds 3 px and 5 % of the true magnitude.
FL_ABS_PX = 3.0
FL_REL = 0.05


def _check_pair(pred: Any, gt: Any) -> None:
    check_flow(np.shape(pred), name="predicted flow")
    check_flow(np.shape(gt), name="ground-truth flow")
    if tuple(np.shape(pred)) != tuple(np.shape(gt)):
        raise ValueError(f"predicted flow shape {tuple(np.shape(pred))} differs from "
                         f"ground-truth flow shape {tuple(np.shape(gt))}")


def _as_mask(mask: Any, shape: tuple[int, ...], name: str) -> jax.Array:
    """bool [..., H, W] from a bool / 0-1 int / 0-1 float mask of exactly ``shape``."""
    if tuple(np.shape(mask)) != tuple(shape):
        raise ValueError(f"{name} mask shape {tuple(np.shape(mask))} must equal the flow's "
                         f"[..., H, W] shape {tuple(shape)}")
    return jnp.asarray(mask).astype(jnp.float32) > 0.5


def endpoint_error(pred: Any, gt: Any) -> jax.Array:
    """Per-pixel Euclidean distance [..., H, W] between flows [..., H, W, 2]."""
    _check_pair(pred, gt)
    diff = jnp.asarray(pred, jnp.float32) - jnp.asarray(gt, jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1))


def flow_error_sums(pred: Any, gt: Any, valid: Any | None = None,
                    occluded: Any | None = None) -> dict[str, jax.Array]:
    """float32 sums and counts over the pixels of a batch (jit-able).

    ``valid`` [..., H, W] marks pixels with ground truth (KITTI's sparse mask; all
    pixels when None). ``occluded`` [..., H, W] marks pixels left out of the "noc"
    sums (none when None, so noc == all). Keys: ``epe_all_sum``, ``count_all``,
    ``epe_noc_sum``, ``count_noc``, ``outliers_sum`` (Fl outliers over valid pixels)
    and ``outliers_noc_sum``.
    """
    _check_pair(pred, gt)
    hw_shape = tuple(np.shape(gt))[:-1]
    valid = None if valid is None else _as_mask(valid, hw_shape, "valid")
    occluded = None if occluded is None else _as_mask(occluded, hw_shape, "occluded")
    return _flow_sums_impl(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32),
                           valid, occluded)


@jax.jit
def _flow_sums_impl(pred: jax.Array, gt: jax.Array, valid: jax.Array | None,
                    occluded: jax.Array | None) -> dict[str, jax.Array]:
    all_mask = jnp.ones(gt.shape[:-1], bool) if valid is None else valid
    noc_mask = all_mask if occluded is None else all_mask & ~occluded
    # Invalid pixels may hold garbage (NaN, 1e9) in the ground truth: zero them first.
    gt = jnp.where(all_mask[..., None], gt, 0.0)
    epe = jnp.where(all_mask, jnp.sqrt(jnp.sum(jnp.square(pred - gt), axis=-1)), 0.0)
    magnitude = jnp.sqrt(jnp.sum(jnp.square(gt), axis=-1))
    outlier = (epe > FL_ABS_PX) & (epe > FL_REL * magnitude)
    f32 = jnp.float32
    return {
        "epe_all_sum": jnp.sum(epe, dtype=f32),
        "count_all": jnp.sum(all_mask, dtype=f32),
        "epe_noc_sum": jnp.sum(jnp.where(noc_mask, epe, 0.0), dtype=f32),
        "count_noc": jnp.sum(noc_mask, dtype=f32),
        "outliers_sum": jnp.sum(outlier & all_mask, dtype=f32),
        "outliers_noc_sum": jnp.sum(outlier & noc_mask, dtype=f32),
    }


def _ratio(num: Any, den: Any) -> Any:
    xp = jnp if isinstance(num, jax.Array) or isinstance(den, jax.Array) else np
    return xp.where(den > 0, num / xp.maximum(den, 1e-30), xp.nan)


def metrics_from_sums(sums: Mapping[str, Any]) -> dict[str, Any]:
    """{"epe_all", "epe_noc", "fl_all", "fl_noc"} from summed counts; NaN where a count is 0.

    Fl is a fraction in [0, 1] (KITTI tables print it as a percentage).
    """
    return {
        "epe_all": _ratio(sums["epe_all_sum"], sums["count_all"]),
        "epe_noc": _ratio(sums["epe_noc_sum"], sums["count_noc"]),
        "fl_all": _ratio(sums["outliers_sum"], sums["count_all"]),
        "fl_noc": _ratio(sums["outliers_noc_sum"], sums["count_noc"]),
    }


class FlowErrorAccumulator:
    """Host-side float64 running sums of :func:`flow_error_sums` over a dataset.

    ``update`` per batch, ``merge`` with another host's accumulator (or add the
    ``sums`` dicts gathered from all hosts), ``compute`` at the end.
    """

    def __init__(self, sums: Mapping[str, float] | None = None) -> None:
        self.sums = {key: 0.0 for key in SUM_KEYS}
        if sums is not None:
            self.add_sums(sums)

    def add_sums(self, sums: Mapping[str, Any]) -> "FlowErrorAccumulator":
        """Adds a dict from :func:`flow_error_sums` (keys missing there count as 0)."""
        unknown = set(sums) - set(SUM_KEYS)
        if unknown:
            raise ValueError(f"unknown flow-error sums {sorted(unknown)}; expected {SUM_KEYS}")
        for key, value in sums.items():
            self.sums[key] += float(np.asarray(value, dtype=np.float64))
        return self

    def update(self, pred: Any, gt: Any, valid: Any | None = None,
               occluded: Any | None = None) -> "FlowErrorAccumulator":
        """Adds one batch; arguments as in :func:`flow_error_sums`."""
        return self.add_sums(flow_error_sums(pred, gt, valid, occluded))

    def merge(self, other: "FlowErrorAccumulator") -> "FlowErrorAccumulator":
        """A new accumulator holding both sets of sums."""
        return FlowErrorAccumulator(self.sums).add_sums(other.sums)

    def compute(self) -> dict[str, float]:
        """{"epe_all", "epe_noc", "fl_all", "fl_noc"} as Python floats (NaN when empty)."""
        return {k: float(v) for k, v in metrics_from_sums(
            {k: np.float64(v) for k, v in self.sums.items()}).items()}


@flax.struct.dataclass
class FlowErrorMetric(clu_metrics.Metric):
    """clu metric form of the flow sums, for jitted eval steps (float32 sums).

    Model outputs: ``flow`` (prediction), ``flow_gt``, optional ``flow_valid`` and
    ``flow_occluded``. float32 sums keep ~7 significant digits, enough for the means.
    """

    sums: dict[str, jax.Array]

    @classmethod
    def from_model_output(cls, flow: Any, flow_gt: Any, flow_valid: Any | None = None,
                          flow_occluded: Any | None = None, **_: Any) -> "FlowErrorMetric":
        return cls(sums=flow_error_sums(flow, flow_gt, flow_valid, flow_occluded))

    @classmethod
    def empty(cls) -> "FlowErrorMetric":
        return cls(sums={key: jnp.zeros((), jnp.float32) for key in SUM_KEYS})

    def merge(self, other: "FlowErrorMetric") -> "FlowErrorMetric":
        return type(self)(sums=jax.tree_util.tree_map(jnp.add, self.sums, other.sums))

    def compute(self) -> dict[str, jax.Array]:
        return metrics_from_sums(self.sums)

    def compute_value(self) -> clu_values.Scalar:
        """The all-pixel EPE as a clu Scalar (``Collection.compute_values`` needs one scalar)."""
        return clu_values.Scalar(self.compute()["epe_all"])
