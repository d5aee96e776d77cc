"""The loss terms of "Every Frame Counts" (EFC), eqs. (2)-(9), one function each.

Conventions: images [..., H, W, C] in [0, 1]; flows [..., H, W, 2] in this library's
direction (``flow_ij`` maps frame i's pixels into frame j, so ``warp(x_j, flow_ij)`` is
frame j brought into frame i's grid); occlusion maps [..., H, W] in [0, 1], 1 = occluded.
Every term is a mean over pixels (the paper's sums, normalised so weights do not depend
on the resolution). ``combine`` weights them and computes only weighted terms.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from vsegjax import ops

# Eq. (9) and the text of the EFC paper: lambda_cons, lambda_occ, lambda_sm; L_pm has 1.
DEFAULT_WEIGHTS = {"L_seg": 1.0, "L_cons": 10.0, "L_occ": 0.4, "L_sm": 0.5, "L_pm": 1.0}
ALPHA = 0.2  # eq. (4)
BETA = 0.85  # eq. (6)


def consistency_loss(feat_i: jax.Array, feat_j: jax.Array, flow_ij: jax.Array,
                     occ_i: jax.Array | None = None) -> jax.Array:
    """L_cons, eq. (2): ``(1 - O_i) ||warp(S_j, F_ij) - S_i||^2``, averaged over pixels.

    ``flow_ij`` must have the features' resolution (see ``ops.resize_flow``).
    """
    warped = ops.warp(feat_j, flow_ij)
    err = jnp.sum(jnp.square(warped - feat_i), axis=-1)
    if occ_i is not None:
        err = err * (1.0 - occ_i)
    return jnp.mean(err)


def occlusion_loss(occ_prob: jax.Array, occ_target: jax.Array, alpha: float = ALPHA,
                   eps: float = 1e-6) -> jax.Array:
    """L_occ, eq. (4): ``-log p(O_est = O_hat) - alpha * exp(-O_est)``, averaged.

    ``occ_prob`` is the sigmoid output O_est, ``occ_target`` the out-of-image mask O_hat
    of eq. (3) (``ops.out_of_image_mask``). The second term rewards predicting less
    occlusion, since occluded pixels escape the other losses.
    """
    p = jnp.clip(occ_prob, eps, 1.0 - eps)
    nll = -(occ_target * jnp.log(p) + (1.0 - occ_target) * jnp.log(1.0 - p))
    return jnp.mean(nll - alpha * jnp.exp(-occ_prob))


def photometric_map(image: jax.Array, warped: jax.Array, beta: float = BETA) -> jax.Array:
    """G(I, I') of eq. (6): ``beta (1 - SSIM)/2 + (1 - beta) |I - I'|``, per pixel [..., H, W]."""
    dssim = jnp.mean((1.0 - ops.ssim(image, warped)) / 2.0, axis=-1)
    l1 = jnp.mean(jnp.abs(image - warped), axis=-1)
    return beta * dssim + (1.0 - beta) * l1


def segmentation_occlusion(probs_i: jax.Array, probs_j: jax.Array,
                           flow_ij: jax.Array) -> jax.Array:
    """O_seg: 1 where the class of frame i differs from frame j's warped class (eq. 5)."""
    warped = ops.warp(probs_j, flow_ij)
    return (jnp.argmax(probs_i, -1) != jnp.argmax(warped, -1)).astype(jnp.float32)


def photometric_loss(image_i: jax.Array, image_j: jax.Array, flow_ij: jax.Array,
                     occ_est: jax.Array | None = None, occ_seg: jax.Array | None = None,
                     beta: float = BETA) -> jax.Array:
    """L_pm, eqs. (5)-(6): ``G(I_i, warp(I_j, F_ij)) (1 + O_error - O_est)``, averaged,
    with ``O_error = max(O_seg - O_est, 0)``: error regions count double, occluded ones not.
    """
    g = photometric_map(image_i, ops.warp(image_j, flow_ij), beta)
    o_est = jnp.zeros_like(g) if occ_est is None else occ_est
    o_err = jnp.zeros_like(g) if occ_seg is None else jnp.maximum(occ_seg - o_est, 0.0)
    return jnp.mean(g * (1.0 + o_err - o_est))


def smoothness_loss(flow: jax.Array, image: jax.Array, edge_alpha: float = 1.0) -> jax.Array:
    """L_sm, eq. (7): edge-aware first-order smoothness ``|dF| exp(-|dI|)``, averaged."""
    gx, gy = ops.edge_aware_flow_gradients(flow, image, edge_alpha)
    return jnp.mean(gx) + jnp.mean(gy)


def combine(weights: Mapping[str, float],
            terms: Mapping[str, Callable[[], jax.Array]]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. (9): ``sum_k w_k L_k`` over the terms with a non-zero weight.

    ``terms`` maps names to zero-argument functions, so a term whose weight is zero or
    absent is never computed (and adds no gradient); each computed term is returned for
    logging. An unknown weight name is an error.
    """
    unknown = set(weights) - set(terms)
    if unknown:
        raise ValueError(f"loss weights for unknown terms {sorted(unknown)}; known: {sorted(terms)}")
    values = {name: fn() for name, fn in terms.items() if weights.get(name)}
    if not values:
        raise ValueError("no loss term has a non-zero weight")
    total = sum(weights[name] * value for name, value in values.items())
    return total, values
