"""Window sampling and snippet-consistent augmentations (vsegjax.data.augment)."""

import numpy as np
import pytest

from _tiny_builder import default_shifts, make_snippet
from vsegjax.data import augment as aug
from vsegjax.ops import warp, warp_nearest


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ windows


def test_fake_snippet_flow_is_exact():
    ex = make_snippet(labelled=None)
    for t in range(5):
        back = np.asarray(warp(ex["frames"][t + 1].astype(np.float32), ex["flow_fwd"][t]))
        valid = ex["occ_fwd"][t] == 0
        np.testing.assert_allclose(back[valid], ex["frames"][t][valid], atol=1e-3)
        fwd = np.asarray(warp(ex["frames"][t].astype(np.float32), ex["flow_bwd"][t]))
        valid = ex["occ_bwd"][t] == 0
        np.testing.assert_allclose(fwd[valid], ex["frames"][t + 1][valid], atol=1e-3)


def test_window_annotated_picks_frames_and_flows():
    ex = make_snippet(labelled=(1, 3), label_index=3)
    out = aug.sample_window(ex, 2, 1, "annotated")
    assert out["frames"].shape[0] == 4 and out["flow_fwd"].shape[0] == 3
    np.testing.assert_array_equal(out["frames"], ex["frames"][1:5])
    np.testing.assert_array_equal(out["labels"], ex["labels"][1:5])
    np.testing.assert_array_equal(out["has_label"], [True, False, True, False])
    for key in ("flow_fwd", "flow_bwd", "occ_fwd", "occ_bwd"):
        np.testing.assert_array_equal(out[key], ex[key][1:4])
    shifts = default_shifts(6)
    for k in range(3):  # flow_fwd[k] links window frames k and k+1
        assert tuple(out["flow_fwd"][k, 0, 0]) == shifts[1 + k]
    assert out["label_pos"] == 2 and out["label_index"] == 2 and out["window_start"] == 1
    assert out["has_label"][out["label_pos"]]
    assert out["snippet_id"] == ex["snippet_id"]
    # the input is untouched
    assert ex["frames"].shape[0] == 6 and ex["label_index"] == 3


def test_window_after_only_and_int_frame():
    ex = make_snippet(labelled=(1, 3), label_index=3)
    out = aug.sample_window(ex, 0, 2, 1)
    np.testing.assert_array_equal(out["frames"], ex["frames"][1:4])
    assert out["label_pos"] == 0
    single = aug.sample_window(ex, 0, 0, "annotated")
    assert single["frames"].shape[0] == 1 and single["flow_fwd"].shape[0] == 0


def test_window_annotated_out_of_range_raises():
    ex = make_snippet(snippet_id=7, labelled=(1, 3), label_index=3)
    with pytest.raises(ValueError, match=r"snippet 7 has 6 frames.*label_index=3"):
        aug.sample_window(ex, 4, 0, "annotated")
    with pytest.raises(ValueError, match="snippet 7"):
        aug.sample_window(ex, 0, 3, "annotated")
    with pytest.raises(ValueError, match="label_frame"):
        aug.sample_window(ex, 0, 0, "middle")


def test_window_random_picks_only_fitting_labelled_frames():
    ex = make_snippet(labelled=(0, 2, 3, 5), label_index=3)
    starts = set()
    for seed in range(40):
        out = aug.sample_window(ex, 1, 1, "random", _rng(seed))
        start = int(out["window_start"])
        starts.add(start + 1)
        assert out["has_label"][out["label_pos"]]
        np.testing.assert_array_equal(out["frames"], ex["frames"][start:start + 3])
    assert starts == {2, 3}  # 0 and 5 are labelled but the window does not fit there
    with pytest.raises(ValueError, match="none of the labelled frames"):
        aug.sample_window(make_snippet(labelled=(0, 5)), 1, 1, "random", _rng())


# ------------------------------------------------------------------ geometry


def test_hflip_mirrors_and_negates_flow_x():
    ex = make_snippet(labelled=None)
    out = aug.hflip(ex)
    np.testing.assert_array_equal(out["frames"], ex["frames"][:, :, ::-1])
    np.testing.assert_array_equal(out["labels"], ex["labels"][:, :, ::-1])
    np.testing.assert_array_equal(out["occ_fwd"], ex["occ_fwd"][:, :, ::-1])
    np.testing.assert_array_equal(out["flow_fwd"][..., 0], -ex["flow_fwd"][:, :, ::-1, 0])
    np.testing.assert_array_equal(out["flow_fwd"][..., 1], ex["flow_fwd"][:, :, ::-1, 1])
    np.testing.assert_array_equal(aug.hflip(out)["flow_bwd"], ex["flow_bwd"])


def test_scale_by_two_doubles_flow_and_keeps_label_values():
    ex = make_snippet(labelled=(1, 3))
    out = aug.random_scale(ex, 2.0)
    assert out["frames"].shape == (6, 48, 64, 3)
    assert out["labels"].shape == (6, 48, 64) and out["occ_fwd"].shape == (5, 48, 64)
    np.testing.assert_allclose(out["flow_fwd"], 2.0 * ex["flow_fwd"][:, :1, :1].repeat(
        48, 1).repeat(64, 2), atol=1e-5)
    assert set(np.unique(out["labels"])) <= set(np.unique(ex["labels"]))
    small = aug.random_scale(ex, 0.75)
    assert small["frames"].shape[1:3] == (18, 24)
    assert set(np.unique(small["labels"])) <= set(np.unique(ex["labels"]))
    assert set(np.unique(small["occ_fwd"])) <= {0, 1}


def test_anisotropic_resize_scales_flow_per_axis():
    ex = make_snippet(shifts=[(2, 3)] * 5)
    out = aug.resize(ex, 12, 64)  # y halves, x doubles
    np.testing.assert_allclose(out["flow_fwd"][..., 0], 4.0, atol=1e-5)
    np.testing.assert_allclose(out["flow_fwd"][..., 1], 1.5, atol=1e-5)


def test_random_crop_identical_and_pads():
    ex = make_snippet(labelled=None)
    out = aug.random_crop(ex, 16, 20, _rng(3))
    assert out["frames"].shape == (6, 16, 20, 3)
    # locate the crop from frame 0 and check every other frame used the same window
    found = [(i, j) for i in range(9) for j in range(13)
             if np.array_equal(ex["frames"][0, i:i + 16, j:j + 20], out["frames"][0])]
    assert found
    i, j = found[0]
    np.testing.assert_array_equal(out["frames"], ex["frames"][:, i:i + 16, j:j + 20])
    np.testing.assert_array_equal(out["flow_fwd"], ex["flow_fwd"][:, i:i + 16, j:j + 20])
    big = aug.random_crop(ex, 30, 40, _rng(0))
    assert big["frames"].shape == (6, 30, 40, 3)
    assert np.all(big["frames"][:, 24:] == 0) and np.all(big["labels"][:, :, 32:] == 255)
    assert np.all(big["flow_fwd"][:, 24:] == 0) and np.all(big["occ_fwd"][:, :, 32:] == 1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flow_and_labels_stay_consistent_after_augmentation(seed):
    """The key property: after scale + crop + flip the flow still maps frame t+1 onto t."""
    # 48x64 so that label boundaries (where nearest sampling at a fractional flow may
    # legitimately be one pixel off) are a small share of the interior.
    ex = make_snippet(seed, height=48, width=64, labelled=None)
    rng = _rng(seed)
    ex = aug.random_scale(ex, (0.75, 1.5), rng)
    ex = aug.random_crop(ex, 36, 48, rng)
    if seed % 2 == 0:
        ex = aug.hflip(ex)
    ex = aug.mark_out_of_view(aug.finalize(ex))
    assert ex["frames"].dtype == np.float32 and ex["labels"].dtype == np.int32
    m = 3  # interior margin
    for t in range(5):
        valid = ex["occ_fwd"][t, m:-m, m:-m] == 0
        assert valid.mean() > 0.5
        warped = np.asarray(warp(ex["frames"][t + 1], ex["flow_fwd"][t]))[m:-m, m:-m]
        target = ex["frames"][t, m:-m, m:-m]
        err = np.abs(warped - target).mean(-1)[valid].mean()
        baseline = np.abs(ex["frames"][t + 1, m:-m, m:-m] - target).mean(-1)[valid].mean()
        assert err < 0.25 * baseline, (t, err, baseline)
        lab = np.asarray(warp_nearest(ex["labels"][t + 1], ex["flow_fwd"][t],
                                      fill_value=255))[m:-m, m:-m]
        agree = (lab == ex["labels"][t, m:-m, m:-m])[valid].mean()
        assert agree >= 0.95, (t, agree)


def test_labels_exact_after_crop_and_flip_without_scaling():
    ex = make_snippet(2, labelled=None)
    ex = aug.hflip(aug.random_crop(ex, 20, 28, _rng(2)))
    ex = aug.mark_out_of_view(ex)  # the crop moved some matches out of view
    for t in range(5):
        lab = np.asarray(warp_nearest(ex["labels"][t + 1], ex["flow_fwd"][t], fill_value=255))
        valid = ex["occ_fwd"][t] == 0
        np.testing.assert_array_equal(lab[valid], ex["labels"][t][valid])


def test_mark_out_of_view_sets_occlusion_at_the_leaving_border():
    ex = make_snippet(shifts=[(2, 0)] * 5)
    ex["occ_fwd"] = np.zeros_like(ex["occ_fwd"])
    out = aug.mark_out_of_view(ex)
    assert np.all(out["occ_fwd"][:, :, -2:] == 1) and np.all(out["occ_fwd"][:, :, :-2] == 0)


# ------------------------------------------------------------------ colour


def test_color_jitter_identical_factors_for_all_frames():
    ex = make_snippet(labelled=None)
    out = aug.color_jitter(ex, 0.3, 0.0, 0.0, _rng(5))
    x = ex["frames"].astype(np.float32) / 255
    y = out["frames"]
    ok = (y < 0.999) & (x > 0.05)  # unclipped pixels
    ratios = [np.median(y[t][ok[t]] / x[t][ok[t]]) for t in range(6)]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)
    assert abs(ratios[0] - 1.0) > 1e-3
    # all three jitters: identical frames stay identical, so the map is the same per frame
    same = dict(ex, frames=np.repeat(ex["frames"][:1], 6, axis=0))
    out = aug.color_jitter(same, 0.3, 0.3, 0.3, _rng(6))
    assert out["frames"].dtype == np.float32
    for t in range(1, 6):
        np.testing.assert_array_equal(out["frames"][t], out["frames"][0])
    assert not np.allclose(out["frames"][0], same["frames"][0] / 255, atol=1e-3)
    assert out["frames"].min() >= 0 and out["frames"].max() <= 1


# ------------------------------------------------------------------ config


def test_augment_apply_deterministic_and_typed():
    ex = aug.sample_window(make_snippet(labelled=(1, 3)), 1, 1)
    cfg = aug.Augment(scale_range=(0.9, 1.3), crop_size=(16, 16))
    a, b = cfg.apply(ex, _rng(11)), cfg.apply(ex, _rng(11))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert set(a) == set(ex)
    assert a["frames"].shape == (3, 16, 16, 3) and a["frames"].dtype == np.float32
    assert a["labels"].dtype == np.int32 and a["flow_fwd"].dtype == np.float32
    assert a["occ_fwd"].dtype == np.float32 and a["has_label"].dtype == bool
    assert a["label_pos"] == 1 and a["label_index"] == 1
    c = cfg.apply(ex, _rng(12))
    assert not np.array_equal(a["frames"], c["frames"])


def test_augment_from_config():
    cfg = aug.Augment.from_config({"crop_size": [8, 8], "hflip": False, "color": None})
    assert cfg.crop_size == (8, 8) and cfg.scale_range == (0.75, 1.25) and not cfg.hflip
    with pytest.raises(ValueError, match="unknown augment fields"):
        aug.Augment.from_config({"crop": (8, 8)})
    with pytest.raises(ValueError, match="scale_range"):
        aug.Augment(scale_range=(1.5, 1.0))


def test_augment_resize_first_scales_flow():
    ex = aug.sample_window(make_snippet(labelled=(1, 3)), 1, 1)
    h, w = ex["frames"].shape[1:3]
    cfg = aug.Augment(resize=(h // 2, w // 2), scale_range=None, hflip=False, color=None,
                      occlusion_out_of_view=False)
    out = cfg.apply(ex, _rng(0))
    assert out["frames"].shape[1:3] == (h // 2, w // 2)
    np.testing.assert_allclose(out["flow_fwd"], aug.finalize(ex)["flow_fwd"][:, ::2, ::2] / 2,
                               atol=1e-5)
