"""Tests for vsegjax.evaluation: mIoU, flow EPE and Fl, temporal consistency."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metrics as clu_metrics

from vsegjax import evaluation as ev

# A 2x3 hand example, 4 classes, one ignored pixel (predicted 2).
#   cm[true, pred]: (0,0)=1, (1,0)=1, (1,1)=2, (2,2)=1
#   IoU0 = 1 / (1 + 2 - 1) = 1/2, IoU1 = 2 / (3 + 2 - 2) = 2/3, IoU2 = 1 / (1 + 1 - 1) = 1,
#   class 3 absent everywhere -> NaN, mean = (1/2 + 2/3 + 1) / 3 = 13/18.
PRED = np.array([[0, 0, 1], [1, 2, 2]])
LABEL = np.array([[0, 1, 1], [1, 2, 255]])
EXPECTED_CM = np.array([[1, 0, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


# ---------------------------------------------------------------- segmentation

def test_confusion_matrix_hand_example():
    np.testing.assert_array_equal(np.asarray(ev.confusion_matrix(PRED, LABEL, 4)), EXPECTED_CM)


def test_mean_iou_hand_example_with_absent_class_nan():
    miou, per_class = ev.mean_iou(PRED, LABEL, num_classes=4)
    assert isinstance(miou, float)
    np.testing.assert_allclose(per_class[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(per_class[3])
    assert miou == pytest.approx(13 / 18)


def test_ignore_pixels_not_counted():
    # Whatever is predicted on the ignored pixel, the matrix does not change.
    pred = PRED.copy()
    pred[1, 2] = 0
    np.testing.assert_array_equal(np.asarray(ev.confusion_matrix(pred, LABEL, 4)), EXPECTED_CM)
    label = np.full_like(LABEL, 255)
    assert int(np.asarray(ev.confusion_matrix(PRED, label, 4)).sum()) == 0
    miou, per_class = ev.mean_iou(PRED, label, 4)
    assert np.isnan(miou) and np.all(np.isnan(per_class))


def test_class_only_predicted_counts_as_zero():
    # Class 1 predicted but never labelled: IoU 0, included in the mean.
    miou, per_class = ev.mean_iou(np.array([0, 1]), np.array([0, 0]), 3)
    np.testing.assert_allclose(per_class[:2], [0.5, 0.0])
    assert np.isnan(per_class[2])
    assert miou == pytest.approx(0.25)


def test_confusion_of_halves_sums_to_whole():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 6, size=(4, 16, 16))
    label = rng.integers(0, 6, size=(4, 16, 16))
    label[rng.random(label.shape) < 0.1] = 255
    whole = np.asarray(ev.confusion_matrix(pred, label, 6))
    halves = (np.asarray(ev.confusion_matrix(pred[:2], label[:2], 6))
              + np.asarray(ev.confusion_matrix(pred[2:], label[2:], 6)))
    np.testing.assert_array_equal(whole, halves)
    assert whole.sum() == np.sum(label != 255)


def test_predictions_out_of_range_are_dropped_not_crash():
    cm = np.asarray(ev.confusion_matrix(np.array([0, 9, -1]), np.array([0, 1, 1]), 3))
    assert cm.sum() == 1 and cm[0, 0] == 1


def test_bad_label_ids_raise_naming_ids():
    label = np.array([[0, 7], [1, 255]])
    with pytest.raises(ValueError, match=r"7"):
        ev.mean_iou(np.zeros_like(label), label, num_classes=5)
    with pytest.raises(ValueError, match=r"7"):
        ev.confusion_matrix(jnp.zeros((2, 2), jnp.int32), jnp.asarray(label), 5)


def test_shape_mismatch_raises_naming_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        ev.mean_iou(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)


def test_confusion_matrix_under_jit_drops_bad_labels():
    fn = jax.jit(ev.confusion_matrix, static_argnums=(2,))
    cm = np.asarray(fn(jnp.array([0, 1, 1]), jnp.array([0, 7, 1]), 3))
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_iou_from_confusion_works_on_jax_and_numpy():
    mean_np, per_np = ev.iou_from_confusion(EXPECTED_CM)
    mean_j, per_j = jax.jit(ev.iou_from_confusion)(jnp.asarray(EXPECTED_CM))
    np.testing.assert_allclose(np.asarray(per_j), per_np, rtol=1e-6)
    assert float(mean_j) == pytest.approx(float(mean_np), rel=1e-6)


def test_category_iou_hand_case():
    # Classes {0, 3} -> category 0, {1, 2} -> category 1:
    #   category cm = [[1, 0], [1, 3]]; IoU0 = 1 / (1 + 2 - 1) = 0.5, IoU1 = 3 / (4 + 3 - 3) = 0.75.
    mapping = [0, 1, 1, 0]
    np.testing.assert_array_equal(ev.category_confusion(EXPECTED_CM, mapping), [[1, 0], [1, 3]])
    mean, per_cat = ev.category_iou(EXPECTED_CM, mapping)
    np.testing.assert_allclose(per_cat, [0.5, 0.75])
    assert mean == pytest.approx(0.625)
    jax_cat = ev.category_confusion(jnp.asarray(EXPECTED_CM), mapping)
    np.testing.assert_array_equal(np.asarray(jax_cat), [[1, 0], [1, 3]])
    with pytest.raises(ValueError, match="3 entries"):
        ev.category_confusion(EXPECTED_CM, [0, 1, 1])


def test_cityscapes_categories():
    cats = ev.CITYSCAPES_CATEGORIES
    names = ev.CITYSCAPES_CLASS_NAMES
    assert len(cats) == len(names) == 19
    by_cat = {ev.CITYSCAPES_CATEGORY_NAMES[c]: [n for n, k in zip(names, cats) if k == c]
              for c in range(7)}
    assert by_cat == {
        "flat": ["road", "sidewalk"], "construction": ["building", "wall", "fence"],
        "object": ["pole", "traffic light", "traffic sign"],
        "nature": ["vegetation", "terrain"], "sky": ["sky"], "human": ["person", "rider"],
        "vehicle": ["car", "truck", "bus", "train", "motorcycle", "bicycle"]}
    # Confusing car with truck is a perfect vehicle-category prediction.
    cm = np.zeros((19, 19), np.int64)
    cm[13, 14] = 10
    _, per_cat = ev.category_iou(cm)
    assert per_cat[6] == 1.0 and np.isnan(per_cat[:6]).all()


def test_clu_metric_merge_equals_single_pass():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 5, size=(6, 8, 8))
    label = rng.integers(0, 5, size=(6, 8, 8))
    metric_cls = ev.confusion_metric(5)
    assert ev.confusion_metric(5) is metric_cls  # cached: one pytree structure per class count
    whole = metric_cls.from_model_output(predictions=pred, labels=label)
    merged = metric_cls.empty()
    for i in range(0, 6, 2):
        merged = merged.merge(metric_cls.from_model_output(predictions=pred[i:i + 2],
                                                           labels=label[i:i + 2]))
    np.testing.assert_array_equal(merged.confusion(), whole.confusion())
    miou, per_class = ev.mean_iou(pred, label, 5)
    out = merged.compute()
    assert float(out["miou"]) == pytest.approx(miou, rel=1e-6)
    np.testing.assert_allclose(np.asarray(out["per_class_iou"]), per_class, rtol=1e-6)
    # reduce(): sum over a leading (device / host) axis.
    parts = [metric_cls.from_model_output(predictions=pred[i:i + 2], labels=label[i:i + 2])
             for i in range(0, 6, 2)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *parts)
    np.testing.assert_array_equal(stacked.reduce().confusion(), whole.confusion())


def test_clu_metric_counts_stay_exact_beyond_int32():
    metric_cls = ev.confusion_metric(2)
    big = metric_cls.from_confusion(np.full((2, 2), 2**30 + 3, np.int32))
    total = metric_cls.empty()
    for _ in range(5):
        total = total.merge(big)
    assert total.confusion()[0, 0] == 5 * (2**30 + 3)


def test_clu_metric_in_collection_under_jit_with_mask():
    metric_cls = ev.confusion_metric(3)
    collection = clu_metrics.Collection.create(seg=metric_cls)
    pred = jnp.array([[0, 1], [2, 2]])
    label = jnp.array([[0, 1], [1, 2]])
    step = jax.jit(lambda p, l, m: collection.single_from_model_output(
        predictions=p, labels=l, mask=m))
    # Per-example mask drops the second row (the only error).
    out = step(pred, label, jnp.array([True, False])).compute()["seg"]
    assert float(out["miou"]) == pytest.approx(1.0)
    assert np.isnan(np.asarray(out["per_class_iou"])[2])
    with pytest.raises(ValueError, match="confusion_metric"):
        ev.ConfusionMatrixMetric.empty()


@pytest.mark.multidevice
def test_clu_metric_on_sharded_batch_matches_host():
    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 4, size=(len(devices), 4, 4))
    label = rng.integers(0, 4, size=(len(devices), 4, 4))
    metric_cls = ev.confusion_metric(4)
    step = jax.jit(lambda p, l: metric_cls.from_model_output(predictions=p, labels=l))
    sharded = step(jax.device_put(pred, sharding), jax.device_put(label, sharding))
    np.testing.assert_array_equal(sharded.confusion(), np.asarray(
        ev.confusion_matrix(pred, label, 4)))
    # Per-example mask and the flow metric on the same sharded batch.
    keep = np.arange(len(devices)) % 2 == 0
    masked = jax.jit(lambda p, l, m: metric_cls.from_model_output(predictions=p, labels=l,
                                                                   mask=m))(
        jax.device_put(pred, sharding), jax.device_put(label, sharding),
        jax.device_put(keep, sharding))
    np.testing.assert_array_equal(masked.confusion(), np.asarray(
        ev.confusion_matrix(pred[keep], label[keep], 4)))
    gt = rng.normal(size=(len(devices), 4, 4, 2)).astype(np.float32)
    flow_step = jax.jit(lambda p, g: ev.FlowErrorMetric.from_model_output(flow=p, flow_gt=g))
    out = flow_step(jax.device_put(gt + 1.0, sharding), jax.device_put(gt, sharding)).compute()
    assert float(out["epe_all"]) == pytest.approx(np.sqrt(2.0), rel=1e-5)


# ---------------------------------------------------------------- flow

def test_epe_identical_is_zero_and_constant_offset_is_five():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(2, 5, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(ev.endpoint_error(gt, gt)), 0.0)
    pred = gt + np.array([3.0, 4.0], np.float32)
    epe = np.asarray(ev.endpoint_error(pred, gt))
    assert epe.shape == (2, 5, 6)
    np.testing.assert_allclose(epe, 5.0, rtol=1e-5)
    acc = ev.FlowErrorAccumulator().update(pred, gt)
    assert acc.compute()["epe_all"] == pytest.approx(5.0, rel=1e-5)


def test_fl_outlier_rule_hand_case():
    # Error 4 on |gt| = 100: 4 < 5 % of 100 -> not an outlier.
    # Error 4 on |gt| = 10: 4 > 3 and 4 > 0.5 -> outlier.
    # Error 2 on |gt| = 0: below 3 px -> not an outlier.
    gt = np.array([[[[100.0, 0.0], [10.0, 0.0], [0.0, 0.0]]]])
    pred = np.array([[[[104.0, 0.0], [14.0, 0.0], [0.0, 2.0]]]])
    sums = ev.flow_error_sums(pred, gt)
    assert float(sums["outliers_sum"]) == 1.0
    out = ev.metrics_from_sums(sums)
    assert float(out["fl_all"]) == pytest.approx(1 / 3)
    assert float(out["epe_all"]) == pytest.approx(10 / 3, rel=1e-6)


def test_epe_noc_excludes_occluded_and_valid_mask_excludes_garbage():
    gt = np.array([[[[0.0, 0.0], [0.0, 0.0], [np.nan, 1e9]]]])
    pred = np.array([[[[1.0, 0.0], [0.0, 3.0], [0.0, 0.0]]]])
    valid = np.array([[[True, True, False]]])
    occluded = np.array([[[0.0, 1.0, 0.0]]])  # float 0/1 masks as from vsegjax.ops
    out = ev.FlowErrorAccumulator().update(pred, gt, valid, occluded).compute()
    assert out["epe_all"] == pytest.approx(2.0)
    assert out["epe_noc"] == pytest.approx(1.0)
    assert out["fl_all"] == 0.0


def test_flow_accumulator_merge_and_metric_match_single_pass():
    rng = np.random.default_rng(4)
    gt = rng.normal(scale=8.0, size=(4, 6, 7, 2)).astype(np.float32)
    pred = gt + rng.normal(scale=4.0, size=gt.shape).astype(np.float32)
    occ = rng.random(gt.shape[:-1]) < 0.3
    single = ev.FlowErrorAccumulator().update(pred, gt, occluded=occ).compute()
    a = ev.FlowErrorAccumulator().update(pred[:1], gt[:1], occluded=occ[:1])
    b = ev.FlowErrorAccumulator().update(pred[1:], gt[1:], occluded=occ[1:])
    merged = a.merge(b).compute()
    for key in single:
        assert merged[key] == pytest.approx(single[key], rel=1e-6)
    assert 0.0 < single["fl_all"] < 1.0
    step = jax.jit(lambda p, g, o: ev.FlowErrorMetric.from_model_output(
        flow=p, flow_gt=g, flow_occluded=o))
    metric = step(pred[:2], gt[:2], occ[:2]).merge(step(pred[2:], gt[2:], occ[2:])).compute()
    for key in single:
        assert float(metric[key]) == pytest.approx(single[key], rel=1e-5)
    assert np.isnan(ev.FlowErrorAccumulator().compute()["epe_all"])


def test_flow_shape_errors():
    with pytest.raises(ValueError, match="differs"):
        ev.endpoint_error(np.zeros((4, 4, 2)), np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 2\]"):
        ev.endpoint_error(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="valid"):
        ev.flow_error_sums(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)), valid=np.ones((4, 5)))


# ---------------------------------------------------------------- temporal consistency

def _constant_flow(t, h, w, dx, dy):
    fwd = np.zeros((t - 1, h, w, 2), np.float32)
    fwd[..., 0], fwd[..., 1] = dx, dy
    return fwd, -fwd


def test_constant_labels_translation_is_fully_consistent():
    fwd, bwd = _constant_flow(5, 12, 16, 2.0, 1.0)
    res = ev.temporal_consistency(np.full((5, 12, 16), 3), fwd, bwd)
    assert res.ratio == 1.0 and res.consistent == res.total > 12 * 16 // 2


def test_flicker_on_one_frame_drops_known_fraction():
    # Zero flow: one trajectory per pixel spanning all frames, 20 in total.
    labels = np.ones((4, 4, 5), np.int32)
    labels[2, 0, :3] = 0  # three pixels flicker on frame 2 only
    fwd, bwd = _constant_flow(4, 4, 5, 0.0, 0.0)
    res = ev.temporal_consistency(labels, fwd, bwd)
    assert (res.consistent, res.total) == (17, 20)
    assert res.ratio == pytest.approx(17 / 20)


def test_labels_moving_with_flow_vs_static_labels():
    t, h, w = 6, 8, 24
    stripes = lambda x: (np.floor_divide(x, 3) % 3)  # noqa: E731 - vertical stripes, 3 px wide
    cols = np.arange(w)
    moving = np.stack([np.broadcast_to(stripes(cols - 2 * i), (h, w)) for i in range(t)])
    static = np.broadcast_to(stripes(cols), (t, h, w))
    fwd, bwd = _constant_flow(t, h, w, 2.0, 0.0)
    assert ev.temporal_consistency(moving, fwd, bwd).ratio == 1.0
    res = ev.temporal_consistency(static, fwd, bwd)
    assert res.ratio < 0.5 and res.total > 0


def test_trajectories_ending_at_border_are_counted_by_length():
    # W=8, flow +1 px/frame, 3 frames, 4 rows (per row):
    #   frame 0 seeds x=0..7; x=7 leaves at once (1 frame, not counted).
    #   x=0..6 reach frame 1 at x=1..7, frame 1 seeds x=0.
    #   The trajectory now at x=7 leaves (2 frames, counted); 6 reach frame 2 (3 frames),
    #   the frame-1 seed reaches frame 2 (2 frames), frame 2 seeds x=0 (1 frame, not counted).
    #   Counted per row: 1 + 6 + 1 = 8, so 32 over 4 rows.
    fwd, bwd = _constant_flow(3, 4, 8, 1.0, 0.0)
    res = ev.temporal_consistency(np.zeros((3, 4, 8), np.uint8), fwd, bwd)
    assert (res.consistent, res.total) == (32, 32)
    # Frame 2's left column only holds 1-frame seeds (not counted): changing it changes
    # nothing. Its right column ends the 3-frame trajectory from x=5 in each row.
    labels = np.zeros((3, 4, 8), np.uint8)
    labels[2, :, 0] = 5
    assert ev.temporal_consistency(labels, fwd, bwd).ratio == 1.0
    labels[2, :, 7] = 5
    assert ev.temporal_consistency(labels, fwd, bwd).consistent == 32 - 4


def test_forward_backward_failure_ends_trajectories():
    fwd, _ = _constant_flow(3, 4, 6, 2.0, 0.0)
    res = ev.temporal_consistency(np.zeros((3, 4, 6), np.int32), fwd, np.zeros_like(fwd))
    assert res.total == 0 and np.isnan(res.ratio)


def test_subpixel_flow_and_combine():
    fwd, bwd = _constant_flow(5, 6, 10, 0.5, 0.25)
    a = ev.temporal_consistency(np.full((5, 6, 10), 2), fwd, bwd)
    assert a.ratio == 1.0 and a.total > 0
    labels = np.full((5, 6, 10), 2)
    labels[3, 2:4, 2:6] = 1
    b = ev.temporal_consistency(labels, fwd, bwd)
    assert b.ratio < 1.0
    pooled = ev.combine_consistency([a, b])
    assert pooled.total == a.total + b.total
    assert pooled.ratio == pytest.approx((a.consistent + b.consistent) / (a.total + b.total))


def test_temporal_consistency_input_errors():
    fwd, bwd = _constant_flow(3, 4, 5, 0.0, 0.0)
    with pytest.raises(ValueError, match="T-1"):
        ev.temporal_consistency(np.zeros((4, 4, 5), int), fwd, bwd)
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        ev.temporal_consistency(np.zeros((3, 4, 5, 1), int), fwd, bwd)
    bad = fwd.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ev.temporal_consistency(np.zeros((3, 4, 5), int), bad, bwd)


def test_temporal_consistency_is_fast():
    t, h, w = 30, 128, 256
    # Smooth, slowly rotating flow field with a matching backward flow.
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    fwd = np.stack([0.02 * (ys - h / 2), -0.02 * (xs - w / 2)], -1)
    fwd = np.broadcast_to(fwd, (t - 1, h, w, 2))
    labels = np.broadcast_to((xs // 32).astype(np.int32), (t, h, w))  # 8 vertical bands
    start = time.perf_counter()
    res = ev.temporal_consistency(labels, fwd, -fwd)
    elapsed = time.perf_counter() - start
    assert res.total > h * w
    assert elapsed < 3.0, f"temporal_consistency took {elapsed:.2f}s"


def test_positional_prior_predicts_the_most_frequent_class_per_pixel():
    from vsegjax.evaluation import PositionalPrior
    a = np.array([[0, 1], [2, 255]])
    b = np.array([[0, 2], [2, 255]])
    c = np.array([[1, 2], [0, 1]])
    prior = PositionalPrior(3, (2, 2)).fit([a, b, c])
    np.testing.assert_array_equal(prior.predict(), [[0, 2], [2, 1]])


def test_confusion_matrices_do_not_depend_on_batching_and_honour_the_row_mask():
    from vsegjax.evaluation import ConfusionMatrices
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 4, (6, 5, 7))
    label = rng.integers(0, 4, (6, 5, 7))
    label[0, 0, :3] = 255  # ignored
    whole, batched = ConfusionMatrices(4), ConfusionMatrices(4)
    whole.add("m", pred, label)
    for rows in (slice(0, 2), slice(2, 5), slice(5, 6)):
        batched.add("m", pred[rows], label[rows])
    np.testing.assert_array_equal(whole.cms["m"], batched.cms["m"])
    assert whole.cms["m"].sum() == 6 * 5 * 7 - 3
    masked = ConfusionMatrices(4)
    masked.add("m", pred, label, valid=np.array([True, False] * 3))
    direct = ConfusionMatrices(4)
    direct.add("m", pred[::2], label[::2])
    np.testing.assert_array_equal(masked.cms["m"], direct.cms["m"])


def test_confusion_matrices_known_iou_and_absent_classes():
    from vsegjax.evaluation import ConfusionMatrices
    cms = ConfusionMatrices(3, ["a"])
    # class 0: TP 2, FP 1, FN 0 -> 2/3; class 1: TP 0, FN 1 -> 0; class 2 absent -> None
    cm = cms.add("a", np.array([0, 0, 0, 0]), np.array([0, 0, 1, 255]))
    assert cm.sum() == 3
    assert cms.per_class("a", ["x", "y", "z"]) == {"x": 2 / 3, "y": 0.0, "z": None}
    assert cms.miou("a") == pytest.approx(1 / 3)
    cms.add_counts(("a", "again"), cm)
    assert cms.miou(("a", "again")) == cms.miou("a")
