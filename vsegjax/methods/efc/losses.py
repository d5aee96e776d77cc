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
from vsegjax.losses.relaxation import segmentation_loss

# Eq. (9) and the text of the EFC paper: lambda_cons, lambda_occ, lambda_sm; L_pm has 1.
DEFAULT_WEIGHTS = {"L_seg": 1.0, "L_cons": 10.0, "L_occ": 0.4, "L_sm": 0.5, "L_pm": 1.0}
ALPHA = 0.2  # eq. (4)
BETA = 0.85  # eq. (6)
CONS_ON = ("features", "probabilities")  # what L_cons compares (joint_loss_terms)


def standardize(feat: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Each pixel's feature vector with zero mean and unit variance over its channels."""
    mean = jnp.mean(feat, axis=-1, keepdims=True)
    var = jnp.var(feat, axis=-1, keepdims=True)
    return (feat - mean) * jax.lax.rsqrt(var + eps)


def consistency_loss(feat_i: jax.Array, feat_j: jax.Array, flow_ij: jax.Array,
                     occ_i: jax.Array | None = None, normalize: bool = False) -> jax.Array:
    """L_cons, eq. (2): ``(1 - O_i) ||warp(S_j, F_ij) - S_i||^2 / C``, averaged over pixels.

    The squared norm is divided by the channel count C (a mean squared error, as an
    ``MSELoss`` would compute it), so lambda_cons = 10 means the same for 64 or 1024
    channels; with the plain sum, 10 x L_cons made up 90% of the synthetic run's loss and
    swamped L_seg. ``flow_ij`` must have the features' resolution (``ops.resize_flow``).

    ``normalize``: compare per-pixel standardised features (``standardize``), so the
    loss is ``2 (1 - correlation)`` and cannot be lowered by shrinking or flattening
    the features' scale, only by making their pattern agree along the flow.
    """
    if normalize:
        feat_i, feat_j = standardize(feat_i), standardize(feat_j)
    warped = ops.warp(feat_j, flow_ij)
    err = jnp.mean(jnp.square(warped - feat_i), axis=-1)
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


# --------------------------------------------------------------------------- eq. (9) in full


def _swap_halves(x: jax.Array) -> jax.Array:
    """Rows [B, 2B) then [0, B): each row's partner frame in the EFC model's 2B layout."""
    b = x.shape[0] // 2
    return jnp.concatenate([x[b:], x[:b]], axis=0)


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
    if x.shape[1:3] == (height, width):
        return x
    return jax.image.resize(x, (x.shape[0], height, width) + x.shape[3:], "linear")


def scales(out: Mapping, images: jax.Array, num_scales: int) -> list[tuple]:
    """(flow, O_est, images) per scale, finest first: the full-resolution flow, then the
    first ``num_scales - 1`` levels of the flow decoder's pyramid (images resized)."""
    levels = [(out["flow"], out.get("occlusion_full"))]
    occ = out.get("occlusion") or [None] * len(out["pyramid"])
    levels += list(zip(out["pyramid"], occ))[:max(0, num_scales - 1)]
    return [(f, o, _resize(images, *f.shape[1:3])) for f, o in levels]


def joint_loss_terms(out: Mapping, images: jax.Array, labels: jax.Array, *,
                     num_scales: int = 3, scale_weights: tuple = (1.0, 0.5, 0.25),
                     occlusion_in_cons: bool = True, occlusion_in_pm: bool = True,
                     seg_occlusion: bool = True, cons_occlusion_grad: bool = False,
                     cons_flow_grad: bool = True, cons_normalize: bool = False,
                     cons_on: str = "features", edge_alpha: float = 1.0, relaxation_window: int = 0,
                     alpha: float = ALPHA, beta: float = BETA
                     ) -> dict[str, Callable[[], jax.Array]]:
    """Eq. (9)'s terms as thunks for ``combine``, both directions and several scales.

    Args:
      out: ``EFCModel`` outputs for 2B rows (frame 1 of each pair, then frame 2): row r's
        partner is row ``(r + B) mod 2B`` and ``flow[r]`` maps row r's pixels into it.
      images: [2B, H, W, 3] the frames in the same layout; labels [2B, H, W] (255 = none).
      num_scales / scale_weights: L_pm, L_sm and L_occ are weighted means over the
        full-resolution flow and the decoder's finest ``num_scales - 1`` levels.
      occlusion_in_cons: mask L_cons with O_est (the "+OM" of Table 1).
      occlusion_in_pm: weight L_pm by O_est (the "OE" of Table 2).
      seg_occlusion: add O_error from the segmentation's inconsistency to L_pm (eqs. 5-6).
      edge_alpha: L_sm's edge weight ``exp(-edge_alpha |dI|)`` on [0, 1] images.
      cons_occlusion_grad: let L_cons's gradient reach O_est. Off by default: with
        lambda_cons = 10 it outweighs eq. (4)'s penalty and drives O_est to 1 on the whole
        feature grid (measured on the synthetic data: mean O_est 1.00 at the feature level
        after 700 steps, L_cons ~1e-4), which switches L_cons off.
      cons_flow_grad: let L_cons's gradient reach the flow (eq. 9 as written). False
        trains the flow by L_pm, L_sm and L_occ alone and L_cons only moves the features.
      cons_normalize: L_cons on per-pixel standardised features (``consistency_loss``).
      cons_on: "features" compares the shared encoder's features S at the correlation
        level (eq. 2 as written); "probabilities" compares the segmentation's class
        probabilities at full resolution along the full-resolution flow and O_est (not
        the paper's; measured in docs/efc.md because eq. 2 on a small encoder trained from
        scratch costs it both segmentation and flow here).
    """
    if cons_on not in CONS_ON:
        raise ValueError(f"config field efc.cons_on: {cons_on!r}; choose from {list(CONS_ON)}")
    if len(scale_weights) < num_scales:
        raise ValueError(f"efc.scale_weights {scale_weights} has fewer than num_scales="
                         f"{num_scales} entries")
    w = jnp.asarray(scale_weights[:num_scales], jnp.float32)
    w = w / jnp.sum(w)
    levels: list = []  # built on first use: only L_pm, L_sm and L_occ read the pyramid

    def over_scales(fn):
        if not levels:
            levels.extend(scales(out, images, num_scales))
        return sum(w[k] * fn(*lv) for k, lv in enumerate(levels))

    def l_seg():  # eq. (8); pairs without labels add nothing (cross_entropy: 0 pixels -> 0)
        # relaxation_window > 0: VPLR's boundary label relaxation (losses/relaxation.py).
        return segmentation_loss(out["logits"], labels, relaxation_window)

    def l_cons():
        feats = out["features"]
        h, w_ = feats.shape[1:3]
        level = out.get("corr_level")
        if cons_on == "probabilities":
            feats = jax.nn.softmax(out["logits"], -1)
            flow, occ = out["flow"], out["occlusion_full"]
        elif level is not None:
            flow, occ = out["pyramid"][level], out["occlusion"][level]
        else:  # separate flow network: its flow brought to the feature grid
            flow = ops.resize_flow(out["flow"], h, w_)
            occ = _resize(out["occlusion_full"][..., None], h, w_)[..., 0]
        if not cons_occlusion_grad:
            occ = jax.lax.stop_gradient(occ)
        if not cons_flow_grad:
            flow = jax.lax.stop_gradient(flow)
        return consistency_loss(feats, _swap_halves(feats), flow,
                                occ if occlusion_in_cons else None, cons_normalize)

    def l_occ():
        return over_scales(lambda f, o, _: occlusion_loss(
            o, ops.out_of_image_mask(jax.lax.stop_gradient(f)), alpha))

    def o_seg_full():
        probs = jax.lax.stop_gradient(jax.nn.softmax(out["logits"]))
        return segmentation_occlusion(probs, _swap_halves(probs),
                                      jax.lax.stop_gradient(out["flow"]))

    def l_pm():
        o_seg = o_seg_full() if seg_occlusion else None

        def one(f, o, img):
            seg = None
            if o_seg is not None:
                seg = (_resize(o_seg[..., None], *f.shape[1:3])[..., 0] > 0.5).astype(jnp.float32)
            return photometric_loss(img, _swap_halves(img), f,
                                    o if occlusion_in_pm else None, seg, beta)
        return over_scales(one)

    def l_sm():
        return over_scales(lambda f, _, img: smoothness_loss(f, img, edge_alpha))

    return {"L_seg": l_seg, "L_cons": l_cons, "L_occ": l_occ, "L_pm": l_pm, "L_sm": l_sm}

