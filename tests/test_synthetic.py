"""The synthetic dataset: determinism, exact flow and labels, degradations, TFDS round trip."""

import dataclasses

import numpy as np
import pytest

from vsegjax import ops
from vsegjax.data import features, synthetic, synthetic_tfds

SMALL = synthetic.SyntheticConfig(height=64, width=128, num_frames=5, label_index=3)


@pytest.fixture(scope="module")
def snippets():
    return [synthetic.generate_snippet(SMALL, "train", i, return_clean=True) for i in range(6)]


def test_deterministic_for_a_seed():
    a = synthetic.generate_snippet(SMALL, "train", 3)
    b = synthetic.generate_snippet(SMALL, "train", 3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    other_seed = synthetic.generate_snippet(dataclasses.replace(SMALL, seed=1), "train", 3)
    other_split = synthetic.generate_snippet(SMALL, "validation", 3)
    assert not np.array_equal(a["frames"], other_seed["frames"])
    assert not np.array_equal(a["frames"], other_split["frames"])


def test_format_and_classes(snippets):
    seen = set()
    for ex in snippets:
        features.validate_snippet(ex, num_classes=SMALL.num_classes)
        assert ex["frames"].shape == (5, 64, 128, 3) and ex["flow_fwd"].dtype == np.float32
        seen |= set(np.unique(ex["labels"]).tolist())
    assert len(seen) >= 8, f"only classes {sorted(seen)} appear in 6 snippets"
    assert IGNORE not in seen


IGNORE = features.IGNORE_LABEL


def _interior_of_labels(labels):
    """Pixels whose 3x3 neighbourhood has one label (away from layer boundaries)."""
    pad = np.pad(labels, 1, mode="edge")
    same = np.ones(labels.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= pad[dy:dy + labels.shape[0], dx:dx + labels.shape[1]] == labels
    return same


@pytest.mark.parametrize("direction", ["fwd", "bwd"])
def test_flow_warps_clean_frames_and_labels(snippets, direction):
    """warp(frame[t+1], flow_fwd[t]) ~ frame[t] and warp(frame[t], flow_bwd[t]) ~ frame[t+1]."""
    errs, stills = [], []
    for ex in snippets:
        clean = ex["clean_frames"].astype(np.float32) / 255.0
        for t in range(SMALL.num_frames - 1):
            src, dst = (t + 1, t) if direction == "fwd" else (t, t + 1)
            flow = ex[f"flow_{direction}"][t]
            visible = ex[f"occ_{direction}"][t] == 0
            warped = np.asarray(ops.warp(clean[src], flow))
            err = np.abs(warped - clean[dst]).mean(-1)
            still = np.abs(clean[src] - clean[dst]).mean(-1)
            # Away from label boundaries in both frames (nearest rounding decides there).
            src_interior = np.asarray(ops.warp_nearest(_interior_of_labels(ex["labels"][src]), flow))
            interior = visible & _interior_of_labels(ex["labels"][dst]) & src_interior
            assert err[interior].mean() < 0.03
            errs.append(err[interior].mean())
            stills.append(still[interior].mean())
            warped_labels = np.asarray(ops.warp_nearest(ex["labels"][src], flow, fill_value=IGNORE))
            agree = (warped_labels == ex["labels"][dst])[interior].mean()
            assert agree > 0.995, f"label agreement {agree:.4f} at t={t}"
    # Some snippets barely move; over all of them warping must beat standing still by far.
    assert np.mean(errs) < 0.3 * np.mean(stills), (np.mean(errs), np.mean(stills))


def test_occlusion_masks_mark_out_of_image_and_hidden(snippets):
    total_hidden = 0
    for ex in snippets:
        flow, occ = ex["flow_fwd"], ex["occ_fwd"]
        out = np.asarray(ops.out_of_image_mask(flow)) > 0
        assert np.all(occ[out] == 1), "a pixel leaving the image must be marked occluded"
        total_hidden += int((occ.astype(bool) & ~out).sum())
        # Occlusion is the exception, not the rule.
        assert occ.mean() < 0.3
    assert total_hidden > 0, "no pixel was hidden by another layer in 6 snippets"


def test_objects_enter_and_leave():
    cfg = SMALL
    entering = leaving = 0
    h, w = cfg.height, cfg.width
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float64)
    for i in range(12):
        layers = synthetic.make_layers(cfg, synthetic.snippet_rng(cfg, "train", i))
        first = synthetic.topmost_layer(layers, 0, grid)
        last = synthetic.topmost_layer(layers, cfg.num_frames - 1, grid)
        for k, layer in enumerate(layers):
            if layer.wrap:
                continue
            a, b = (first == k).sum(), (last == k).sum()
            entering += a == 0 and b > 0
            leaving += a > 0 and b == 0
    assert entering > 0 and leaving > 0


def test_degradations():
    always = dataclasses.replace(SMALL, degrade_prob=1.0)
    ex = synthetic.generate_snippet(always, "train", 0, return_clean=True)
    assert np.all(ex["degraded"] > 0)
    assert all(not np.array_equal(f, c) for f, c in zip(ex["frames"], ex["clean_frames"]))
    never = synthetic.generate_snippet(dataclasses.replace(SMALL, degrade_prob=0.0), "train", 0,
                                       return_clean=True)
    assert np.all(never["degraded"] == 0)
    np.testing.assert_array_equal(never["frames"], never["clean_frames"])
    # Degradations never touch labels or flow.
    np.testing.assert_array_equal(ex["labels"], never["labels"])
    np.testing.assert_array_equal(ex["flow_fwd"], never["flow_fwd"])


def test_class_subset_relabels():
    cfg = dataclasses.replace(SMALL, classes=("road", "sky", "building", "car"))
    ex = synthetic.generate_snippet(cfg, "train", 1)
    assert set(np.unique(ex["labels"]).tolist()) <= {0, 1, 2, 3, IGNORE}
    assert (ex["labels"] == 1).any()  # sky


@pytest.mark.parametrize("kwargs,field", [
    (dict(num_frames=1), "num_frames"), (dict(label_index=9), "label_index"),
    (dict(classes=("road", "tram")), "classes"), (dict(height=4), "height"),
])
def test_bad_config_is_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SMALL, **kwargs)


def test_tfds_build_round_trip(tmp_path):
    builder = synthetic_tfds.build(str(tmp_path), "tiny", num_workers=2)
    cfg = synthetic_tfds.TINY
    source = builder.as_data_source("validation")
    assert len(source) == cfg.num_validation
    for i in (0, 5):
        ref = synthetic.generate_snippet(cfg.video, "validation", i)
        got = source[i]
        for key in ref:
            np.testing.assert_array_equal(np.asarray(got[key]), ref[key], err_msg=key)


def test_interrupted_build_does_not_look_complete(tmp_path, monkeypatch):
    real = synthetic.generate_snippet

    def failing(cfg, split, index, **kw):
        if index == 5:
            raise KeyboardInterrupt("simulated interruption")
        return real(cfg, split, index, **kw)

    monkeypatch.setattr(synthetic, "generate_snippet", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic_tfds.build(str(tmp_path), "tiny", num_workers=1)
    builder = synthetic_tfds.make_builder(str(tmp_path), "tiny")
    assert not builder.is_prepared()
    monkeypatch.setattr(synthetic, "generate_snippet", real)
    builder = synthetic_tfds.build(str(tmp_path), "tiny", num_workers=1)
    assert len(builder.as_data_source("train")) == synthetic_tfds.TINY.num_train


def test_custom_config_names_differ():
    a = synthetic_tfds.custom_config(10, 2, height=32, width=64, num_frames=3, label_index=1)
    b = synthetic_tfds.custom_config(10, 2, height=32, width=64, num_frames=3, label_index=1, seed=1)
    assert a.name != b.name and a.name.startswith("h32w64t3")


def test_ground_truth_labels_are_temporally_consistent(snippets):
    """Exact labels chained through exact flow: nearly every trajectory keeps its label,
    while labels that ignore the motion (frame 0 repeated) lose many."""
    from vsegjax.evaluation import temporal_consistency
    truth, frozen = [], []
    for ex in snippets:
        truth.append(temporal_consistency(ex["labels"], ex["flow_fwd"], ex["flow_bwd"]).ratio)
        still = np.repeat(ex["labels"][:1], len(ex["labels"]), axis=0)
        frozen.append(temporal_consistency(still, ex["flow_fwd"], ex["flow_bwd"]).ratio)
    assert np.mean(truth) > 0.95, truth  # misses: nearest-pixel rounding at boundaries
    assert np.mean(frozen) < np.mean(truth) - 0.02, (frozen, truth)
