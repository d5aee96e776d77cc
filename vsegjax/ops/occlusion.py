"""Occlusion masks from flow: out-of-image (eq. 3 of the EFC paper) and forward-backward checks.

Masks are float arrays [..., H, W] with 1 = occluded (no usable correspondence), 0 = visible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vsegjax.ops.warp import check_flow, pixel_grid, warp


def out_of_image_mask(flow: jax.Array) -> jax.Array:
    """1 where ``p + flow(p)`` falls outside the image, eq. (3) of the EFC paper.

    Pass the flow that maps this frame's pixels into the other frame (for frame i and
    the pair (I_i, I_{i+t}), the flow i -> i+t). The paper writes the same test through
    the backward flow. A target is inside when it lies in [0, W-1] x [0, H-1], the region
    where bilinear sampling sees four real pixels.
    """
    flow = jnp.asarray(flow)
    check_flow(flow.shape)
    h, w = flow.shape[-3:-1]
    target = pixel_grid(h, w, flow.dtype) + flow
    inside = ((target[..., 0] >= 0) & (target[..., 0] <= w - 1)
              & (target[..., 1] >= 0) & (target[..., 1] <= h - 1))
    return 1.0 - inside.astype(jnp.float32)


def fb_consistency_mask(flow_fw: jax.Array, flow_bw: jax.Array, *, alpha1: float = 0.01,
                        alpha2: float = 0.5) -> jax.Array:
    """Forward-backward occlusion mask for the frame ``flow_fw`` starts from.

    ``flow_fw`` maps frame t -> t+1 and ``flow_bw`` maps t+1 -> t. A pixel is occluded when
    ``|f + b(p + f)|^2 > alpha1 (|f|^2 + |b(p + f)|^2) + alpha2`` (Sundaram et al. 2010, the
    form used by UnFlow), or when its target leaves the image.
    """
    flow_fw = jnp.asarray(flow_fw)
    flow_bw = jnp.asarray(flow_bw)
    check_flow(flow_fw.shape, name="flow_fw")
    check_flow(flow_bw.shape, flow_fw.shape, name="flow_bw")
    bw_at_target = warp(flow_bw, flow_fw, padding="border")
    diff = jnp.sum(jnp.square(flow_fw + bw_at_target), axis=-1)
    bound = alpha1 * (jnp.sum(jnp.square(flow_fw), -1) + jnp.sum(jnp.square(bw_at_target), -1))
    inconsistent = (diff > bound + alpha2).astype(jnp.float32)
    return jnp.maximum(inconsistent, out_of_image_mask(flow_fw))
