"""Bilinear backward warping by vectorised gathers.

Convention (DESIGN.md): ``warp(x, flow)[i, j] = x(i + flow[i, j, 1], j + flow[i, j, 0])``.
To bring frame t-1 into frame t's pixel grid, pass the flow from t to t-1.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Padding = Literal["zeros", "border"]


def check_flow(flow_shape: tuple[int, ...], image_shape: tuple[int, ...] | None = None,
               name: str = "flow") -> None:
    """Raises ValueError unless ``flow_shape`` is [..., H, W, 2] matching ``image_shape``'s H, W."""
    if len(flow_shape) < 3 or flow_shape[-1] != 2:
        raise ValueError(
            f"{name} must have shape [..., H, W, 2] (channel 0 = x, channel 1 = y); "
            f"got shape {tuple(flow_shape)}")
    if image_shape is not None:
        if len(image_shape) < 3:
            raise ValueError(f"image to warp must have shape [..., H, W, C]; got {tuple(image_shape)}")
        if tuple(image_shape[-3:-1]) != tuple(flow_shape[-3:-1]):
            raise ValueError(
                f"{name} spatial size {tuple(flow_shape[-3:-1])} differs from the image's "
                f"{tuple(image_shape[-3:-1])} (image shape {tuple(image_shape)}, "
                f"{name} shape {tuple(flow_shape)})")


def pixel_grid(height: int, width: int, dtype=jnp.float32) -> jax.Array:
    """[H, W, 2] grid of (x, y) pixel coordinates, in the flow's channel order."""
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=dtype), jnp.arange(width, dtype=dtype),
                          indexing="ij")
    return jnp.stack([xs, ys], axis=-1)


def _broadcast_leading(x: jax.Array, flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    try:
        lead = jnp.broadcast_shapes(x.shape[:-3], flow.shape[:-3])
    except ValueError:
        raise ValueError(
            f"image leading dims {x.shape[:-3]} and flow leading dims {flow.shape[:-3]} "
            f"do not broadcast (image {x.shape}, flow {flow.shape})") from None
    x = jnp.broadcast_to(x, lead + x.shape[-3:])
    flow = jnp.broadcast_to(flow, lead + flow.shape[-3:])
    return x, flow


def sample(x: jax.Array, coords: jax.Array, *, padding: Padding = "zeros") -> jax.Array:
    """Bilinearly samples ``x`` [..., H, W, C] at absolute (x, y) ``coords`` [..., H', W', 2].

    ``padding="zeros"`` treats every pixel outside the image as 0 (each of the four
    neighbours is dropped separately, like ``grid_sample(padding_mode="zeros")``);
    ``padding="border"`` clamps the coordinates to the image first.
    """
    if padding not in ("zeros", "border"):
        raise ValueError(f"padding must be 'zeros' or 'border', got {padding!r}")
    h, w, c = x.shape[-3:]
    lead = x.shape[:-3]
    out_hw = coords.shape[-3:-1]
    cx = coords[..., 0].astype(jnp.promote_types(x.dtype, jnp.float32))
    cy = coords[..., 1].astype(cx.dtype)
    if padding == "border":
        cx = jnp.clip(cx, 0.0, w - 1.0)
        cy = jnp.clip(cy, 0.0, h - 1.0)
    x0 = jnp.floor(cx)
    y0 = jnp.floor(cy)
    # Weights carry the gradient w.r.t. the coordinates (floor is piecewise constant).
    wx1 = cx - x0
    wy1 = cy - y0
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    x0i = x0.astype(jnp.int32)
    y0i = y0.astype(jnp.int32)

    flat = x.reshape(lead + (h * w, c))
    out = jnp.zeros(lead + out_hw + (c,), dtype=cx.dtype)
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            xi = x0i + dx
            yi = y0i + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
            vals = jnp.take_along_axis(flat, idx.reshape(lead + (-1, 1)), axis=-2)
            vals = vals.reshape(lead + out_hw + (c,))
            weight = wx * wy * inside.astype(cx.dtype)
            out = out + weight[..., None] * vals
    return out.astype(jnp.promote_types(x.dtype, jnp.float32))


def warp(x: jax.Array, flow: jax.Array, *, padding: Padding = "zeros") -> jax.Array:
    """Backward-warps ``x`` [..., H, W, C] with ``flow`` [..., H, W, 2] (bilinear).

    Leading (batch) dims of ``x`` and ``flow`` broadcast. Differentiable in ``x`` and
    in ``flow``; the result is float (integer inputs are promoted).
    """
    x = jnp.asarray(x)
    flow = jnp.asarray(flow)
    check_flow(flow.shape, x.shape)
    x, flow = _broadcast_leading(x, flow)
    h, w = flow.shape[-3:-1]
    coords = pixel_grid(h, w, flow.dtype if jnp.issubdtype(flow.dtype, jnp.floating)
                        else jnp.float32) + flow
    return sample(x, coords, padding=padding)


def warp_nearest(x: jax.Array, flow: jax.Array, *, fill_value=0) -> jax.Array:
    """Backward-warps with nearest-neighbour sampling, keeping the dtype (for label maps).

    ``x`` is [..., H, W] or [..., H, W, C]; pixels whose source falls outside get ``fill_value``.
    """
    x = jnp.asarray(x)
    flow = jnp.asarray(flow)
    squeeze = x.ndim == flow.ndim - 1
    if squeeze:
        x = x[..., None]
    check_flow(flow.shape, x.shape)
    x, flow = _broadcast_leading(x, flow)
    h, w, c = x.shape[-3:]
    lead = x.shape[:-3]
    xi = jnp.round(jnp.arange(w, dtype=jnp.float32)[None, :] + flow[..., 0]).astype(jnp.int32)
    yi = jnp.round(jnp.arange(h, dtype=jnp.float32)[:, None] + flow[..., 1]).astype(jnp.int32)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
    vals = jnp.take_along_axis(x.reshape(lead + (h * w, c)), idx.reshape(lead + (-1, 1)), axis=-2)
    vals = vals.reshape(lead + (h, w, c))
    out = jnp.where(inside[..., None], vals, jnp.asarray(fill_value, dtype=x.dtype))
    return out[..., 0] if squeeze else out
