"""The EFC loss terms on hand-made cases (EFC paper, eqs. 2-9)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsegjax import ops
from vsegjax.methods.efc import losses as efc
def _smooth_image(h=24, w=32, seed=0):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    chans = [0.5 + 0.4 * np.sin(xx / rng.uniform(3, 6) + rng.uniform(0, 6))
             * np.cos(yy / rng.uniform(3, 6)) for _ in range(3)]
    return jnp.asarray(np.stack(chans, -1))


def test_photometric_loss_is_zero_for_an_exact_flow_and_positive_otherwise():
    image_j = _smooth_image()
    flow = jnp.broadcast_to(jnp.asarray([2.0, -1.0]), image_j.shape[:2] + (2,))
    image_i = ops.warp(image_j, flow, padding="border")  # frame i = frame j moved by the flow
    interior = (slice(3, -3), slice(3, -3))
    exact = efc.photometric_map(image_i, ops.warp(image_j, flow, padding="border"))
    assert float(jnp.max(exact[interior])) < 1e-5
    wrong = efc.photometric_loss(image_i, image_j, jnp.zeros_like(flow))
    assert float(wrong) > 100 * float(jnp.mean(exact))


def test_photometric_weights_follow_eq5():
    image_i, image_j = _smooth_image(seed=1), _smooth_image(seed=2)
    flow = jnp.zeros(image_i.shape[:2] + (2,))
    g = efc.photometric_map(image_i, image_j)
    occ_est = jnp.zeros(g.shape).at[:, :8].set(1.0)       # occluded: weight 0
    occ_seg = jnp.zeros(g.shape).at[:, 8:16].set(1.0)     # segmentation disagrees: weight 2
    expect = (jnp.sum(2 * g[:, 8:16]) + jnp.sum(g[:, 16:])) / g.size
    got = efc.photometric_loss(image_i, image_j, flow, occ_est, occ_seg)
    np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_consistency_loss_is_zero_for_warped_copies_outside_occlusion():
    feat_j = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 12, 5))
    flow = jnp.zeros((2, 10, 12, 2)).at[..., 0].set(1.0)
    feat_i = ops.warp(feat_j, flow)  # exactly frame j's features carried along the flow
    assert float(efc.consistency_loss(feat_i, feat_j, flow)) == 0.0
    noisy = feat_i.at[:, :, -3:].add(1.0)
    occ = jnp.zeros((2, 10, 12)).at[:, :, -3:].set(1.0)
    assert float(efc.consistency_loss(noisy, feat_j, flow, occ)) == 0.0
    # 3 of 12 columns off by 1 in each of 5 channels: mean over channels 1, over pixels 3/12.
    np.testing.assert_allclose(efc.consistency_loss(noisy, feat_j, flow), 3 / 12, rtol=1e-5)


def test_normalized_consistency_cannot_be_lowered_by_shrinking_the_features():
    feat_j = jax.random.normal(jax.random.PRNGKey(1), (2, 10, 12, 6))
    flow = jnp.zeros((2, 10, 12, 2)).at[..., 1].set(-1.0)
    feat_i = jax.random.normal(jax.random.PRNGKey(2), (2, 10, 12, 6))
    raw = efc.consistency_loss(feat_i, feat_j, flow)
    norm = efc.consistency_loss(feat_i, feat_j, flow, normalize=True)
    # Scaling both frames' features by 0.1 cuts the raw MSE 100x, the normalised not at all.
    np.testing.assert_allclose(efc.consistency_loss(0.1 * feat_i, 0.1 * feat_j, flow),
                               raw / 100, rtol=1e-4)
    np.testing.assert_allclose(efc.consistency_loss(0.1 * feat_i, 0.1 * feat_j, flow,
                                                    normalize=True), norm, rtol=1e-2)  # eps
    # Per pixel it is 2 (1 - Pearson correlation) between S_i and the warped S_j (row 0
    # samples outside the image, so it is masked as occluded).
    occ = jnp.zeros((2, 10, 12)).at[:, 0].set(1.0)
    a = efc.standardize(feat_i)
    b = ops.warp(efc.standardize(feat_j), flow)
    corr = jnp.mean(a * b, axis=-1)
    np.testing.assert_allclose(efc.consistency_loss(feat_i, feat_j, flow, occ, True),
                               jnp.sum(2 * (1 - corr[:, 1:])) / corr.size, rtol=1e-4)
    # Zero for warped copies up to a per-pixel affine change of the features.
    copy = 3.0 * ops.warp(efc.standardize(feat_j), flow) + 1.0
    assert float(efc.consistency_loss(copy, feat_j, flow, normalize=True)) < 1e-6


def test_occlusion_loss_matches_eq4_by_hand():
    p = jnp.asarray([[0.9, 0.2], [0.5, 0.01]])
    target = jnp.asarray([[1.0, 0.0], [1.0, 0.0]])
    by_hand = np.mean([-np.log(0.9) - 0.2 * np.exp(-0.9), -np.log(0.8) - 0.2 * np.exp(-0.2),
                       -np.log(0.5) - 0.2 * np.exp(-0.5), -np.log(0.99) - 0.2 * np.exp(-0.01)])
    np.testing.assert_allclose(efc.occlusion_loss(p, target), by_hand, rtol=1e-5)


def test_smoothness_is_zero_for_constant_flow_and_cheaper_across_image_edges():
    image = jnp.zeros((8, 8, 3)).at[:, 4:].set(1.0)
    assert float(efc.smoothness_loss(jnp.ones((8, 8, 2)), image)) == 0.0
    step = jnp.zeros((8, 8, 2)).at[:, 4:, 0].set(3.0)
    assert float(efc.smoothness_loss(step, image)) < float(efc.smoothness_loss(step, 0 * image))


def test_segmentation_occlusion_marks_changed_classes():
    probs = jnp.zeros((4, 6, 3)).at[..., 0].set(1.0)
    other = probs.at[:, 3:].set(jnp.asarray([0.0, 1.0, 0.0]))
    occ = efc.segmentation_occlusion(probs, other, jnp.zeros((4, 6, 2)))
    np.testing.assert_array_equal(occ, np.repeat([[0, 0, 0, 1, 1, 1]], 4, axis=0))


def test_zero_weight_term_is_not_computed_and_adds_no_gradient():
    calls = []
    x = jnp.asarray(2.0)

    def total(x, w_sm):
        def sm():
            calls.append("sm")
            return x ** 3
        loss, terms = efc.combine({"L_pm": 1.0, "L_sm": w_sm}, {"L_pm": lambda: x ** 2,
                                                              "L_sm": sm})
        return loss

    assert float(jax.grad(total)(x, 0.0)) == pytest.approx(4.0) and calls == []
    assert float(jax.grad(total)(x, 0.5)) == pytest.approx(4.0 + 0.5 * 12.0) and calls == ["sm"]
    with pytest.raises(ValueError, match="unknown terms"):
        efc.combine({"L_typo": 1.0}, {"L_pm": lambda: x})
    assert efc.DEFAULT_WEIGHTS == {"L_seg": 1.0, "L_cons": 10.0, "L_occ": 0.4, "L_sm": 0.5,
                                   "L_pm": 1.0}
