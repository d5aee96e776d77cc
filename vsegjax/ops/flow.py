"""Flow resizing and composition."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vsegjax.ops.warp import check_flow, warp


def resize_flow(flow: jax.Array, height: int, width: int, method: str = "bilinear") -> jax.Array:
    """Resizes [..., H, W, 2] flow to (height, width) and scales the vectors with the image.

    Channel 0 (x) is multiplied by width / W and channel 1 (y) by height / H, so a flow
    that maps pixel p to q at the old size maps the resized p to the resized q.
    """
    flow = jnp.asarray(flow)
    check_flow(flow.shape)
    h, w = flow.shape[-3:-1]
    out = jax.image.resize(flow, flow.shape[:-3] + (height, width, 2), method=method)
    scale = jnp.asarray([width / w, height / h], dtype=out.dtype)
    return out * scale


def compose_flow(flow_ab: jax.Array, flow_bc: jax.Array) -> jax.Array:
    """Flow a -> c from a -> b and b -> c: ``f_ac(p) = f_ab(p) + f_bc(p + f_ab(p))``.

    ``flow_bc`` is sampled bilinearly with border clamping; where ``p + f_ab(p)`` leaves the
    image the result is an extrapolation (mask it with ``out_of_image_mask(flow_ab)``).
    """
    flow_ab = jnp.asarray(flow_ab)
    flow_bc = jnp.asarray(flow_bc)
    check_flow(flow_ab.shape, name="flow_ab")
    check_flow(flow_bc.shape, flow_ab.shape, name="flow_bc")
    return flow_ab + warp(flow_bc, flow_ab, padding="border")
