"""Boundary label relaxation (VPLR): NLL away from boundaries, -log(p_a + p_b) on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsegjax.losses import nll_loss, relaxed_nll, segmentation_loss
from vsegjax.losses.relaxation import boundary_mask, classes_in_window


def _log_probs(shape, num_classes, seed=0):
    logits = jax.random.normal(jax.random.key(seed), shape + (num_classes,)) * 2.0
    return jax.nn.log_softmax(logits)


def test_equals_nll_where_the_window_holds_one_class():
    labels = np.full((2, 8, 10), 1, np.int32)
    labels[1] = 3
    labels[0, 2, 2] = 255  # ignore pixels are excluded from both
    lp = _log_probs((2, 8, 10), 5)
    np.testing.assert_allclose(relaxed_nll(lp, labels), nll_loss(lp, labels), rtol=1e-6)
    assert not np.asarray(boundary_mask(labels, 5)).any()


def test_two_class_boundary_by_hand():
    """Left half class 0, right half class 2 (of 4): with a 3x3 window the two columns
    at the boundary pay -log(p_0 + p_2); every other pixel pays its NLL."""
    h, w = 6, 8
    labels = np.zeros((1, h, w), np.int32)
    labels[:, :, w // 2:] = 2
    lp = np.asarray(_log_probs((1, h, w), 4, seed=3))
    p = np.exp(lp)
    expected = -lp[0, np.arange(h)[:, None], np.arange(w)[None, :], labels[0]]
    for col in (w // 2 - 1, w // 2):
        expected[:, col] = -np.log(p[0, :, col, 0] + p[0, :, col, 2])
    np.testing.assert_allclose(relaxed_nll(jnp.asarray(lp), labels), expected.mean(),
                               rtol=1e-5)
    mask = np.asarray(boundary_mask(labels, 4))[0]
    assert mask[:, [w // 2 - 1, w // 2]].all() and mask.sum() == 2 * h
    # A 5x5 window widens the band to two columns each side.
    assert np.asarray(boundary_mask(labels, 4, window=5))[0].sum() == 4 * h
    # Relaxation never costs more than the NLL (the summed probability is larger).
    assert float(relaxed_nll(lp, labels)) < float(nll_loss(lp, labels))


def test_ignore_neighbours_add_no_class_and_gradients_stay_finite():
    labels = np.full((1, 5, 5), 255, np.int32)
    labels[0, 2, 2] = 1
    present = np.asarray(classes_in_window(labels, 3))
    assert present[0, 2, 2].tolist() == [False, True, False]
    lp = _log_probs((1, 5, 5), 3)
    np.testing.assert_allclose(relaxed_nll(lp, labels), -lp[0, 2, 2, 1], rtol=1e-6)
    grad = jax.grad(lambda x: segmentation_loss(x, labels, 3))(jnp.zeros((1, 5, 5, 3)))
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0
    with pytest.raises(ValueError, match="window"):
        relaxed_nll(lp, labels, window=2)


def test_segmentation_loss_without_window_is_cross_entropy():
    labels = np.random.default_rng(0).integers(0, 3, (2, 4, 4))
    logits = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    np.testing.assert_allclose(segmentation_loss(logits, labels, 0),
                               nll_loss(jax.nn.log_softmax(logits), labels), rtol=1e-6)


def test_efc_and_grfp_losses_take_the_relaxation_window():
    """Every segmentation task reads loss.relaxation_window (EFC's L_seg shown here; the
    GRFP task routes the same window to relaxed_nll)."""
    from vsegjax.methods.efc import losses as efc
    labels = np.zeros((2, 8, 8), np.int32)
    labels[:, :, 4:] = 1
    logits = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    out = {"logits": logits}
    plain = efc.joint_loss_terms(out, None, labels)["L_seg"]()
    relaxed = efc.joint_loss_terms(out, None, labels, relaxation_window=3)["L_seg"]()
    np.testing.assert_allclose(plain, segmentation_loss(logits, labels, 0), rtol=1e-6)
    np.testing.assert_allclose(relaxed, segmentation_loss(logits, labels, 3), rtol=1e-6)
    assert float(relaxed) < float(plain)
