"""Bilinear backward warping by vectorised gathers.

Convention (DESIGN.md): ``warp(x, flow)[i, j] = x(i + flow[i, j, 1], j + flow[i, j, 0])``.
To bring frame t-1 into frame t's pixel grid, pass the flow from t to t-1.
"""

from __future__ import annotations

import functools
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


def _weights(coords: jax.Array, x_dtype, h: int, w: int, padding: Padding):
    """Integer top-left corners (x0, y0) and the bilinear weights (wx0, wx1, wy0, wy1) of
    ``coords``."""
    cx = coords[..., 0].astype(jnp.promote_types(x_dtype, jnp.float32))
    cy = coords[..., 1].astype(cx.dtype)
    if padding == "border":
        cx = jnp.clip(cx, 0.0, w - 1.0)
        cy = jnp.clip(cy, 0.0, h - 1.0)
    x0 = jnp.floor(cx)
    y0 = jnp.floor(cy)
    # The fractions carry the gradient w.r.t. the coordinates (floor is piecewise constant).
    wx1, wy1 = cx - x0, cy - y0
    return x0.astype(jnp.int32), y0.astype(jnp.int32), 1.0 - wx1, wx1, 1.0 - wy1, wy1


def _sample_corners(x: jax.Array, coords: jax.Array, padding: Padding) -> jax.Array:
    """Four gathers, one per neighbour: the form CPUs and GPUs get."""
    h, w, c = x.shape[-3:]
    lead = x.shape[:-3]
    out_hw = coords.shape[-3:-1]
    x0i, y0i, wx0, wx1, wy0, wy1 = _weights(coords, x.dtype, h, w, padding)
    flat = x.reshape(lead + (h * w, c))
    out = jnp.zeros(lead + out_hw + (c,), dtype=wx1.dtype)
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            xi = x0i + dx
            yi = y0i + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
            vals = jnp.take_along_axis(flat, idx.reshape(lead + (-1, 1)), axis=-2)
            vals = vals.reshape(lead + out_hw + (c,))
            weight = wx * wy * inside.astype(wx1.dtype)
            out = out + weight[..., None] * vals
    return out


def _sample_quad(x: jax.Array, coords: jax.Array, padding: Padding) -> jax.Array:
    """One gather per pixel: the TPU form.

    A TPU gather reads at least one (8, 128) tile per index, whatever the row holds (by
    libtpu's cost analysis: 524,288 rows of 19 float32 channels cost 66 KB each, laid out
    with pixels on the lanes; rows of up to 128 channels about 4.6 KB). So each pixel's
    2x2 neighbourhood is packed into the channels of one row first (``quad[i, j]`` holds
    ``x[i-1:i+1, j-1:j+1]``, zeros outside the image) and gathered once: the warp of
    [1, 512, 1024, 19] float32 forward and backward goes from 416 GB accessed to 8 GB
    (``benchmarks/warp_tpu.py``). Rows of fewer than 64 float32 channels are padded to
    the 128 lanes behind a barrier, which keeps XLA from moving the padding after the
    gather (and the pixels back onto the lanes).
    """
    h, w, c = x.shape[-3:]
    lead = x.shape[:-3]
    out_hw = coords.shape[-3:-1]
    x0i, y0i, wx0, wx1, wy0, wy1 = _weights(coords, x.dtype, h, w, padding)
    pad = [(0, 0)] * len(lead)
    xp = jnp.pad(x, pad + [(1, 1), (1, 1), (0, 0)])
    quad = jnp.concatenate([xp[..., :-1, :-1, :], xp[..., :-1, 1:, :],
                            xp[..., 1:, :-1, :], xp[..., 1:, 1:, :]], axis=-1)
    if x.dtype == jnp.float32 and 4 * c < 64:
        quad = jnp.pad(quad, pad + [(0, 0), (0, 0), (0, 128 - 4 * c)])
        quad = jax.lax.optimization_barrier(quad)
    # A neighbourhood with a corner inside has its top-left corner in [-1, w-1] x [-1, h-1].
    valid = (x0i >= -1) & (x0i < w) & (y0i >= -1) & (y0i < h)
    idx = jnp.clip(y0i + 1, 0, h) * (w + 1) + jnp.clip(x0i + 1, 0, w)
    flat = quad.reshape(lead + ((h + 1) * (w + 1), quad.shape[-1]))
    vals = jnp.take_along_axis(flat, idx.reshape(lead + (-1, 1)), axis=-2)
    vals = vals[..., :4 * c].reshape(lead + out_hw + (4, c))
    weights = jnp.stack([wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1], axis=-1)
    weights = weights * valid[..., None].astype(weights.dtype)
    return jnp.einsum("...k,...kc->...c", weights, vals.astype(weights.dtype))


def sample(x: jax.Array, coords: jax.Array, *, padding: Padding = "zeros") -> jax.Array:
    """Bilinearly samples ``x`` [..., H, W, C] at absolute (x, y) ``coords`` [..., H', W', 2].

    ``padding="zeros"`` treats every pixel outside the image as 0 (each of the four
    neighbours is dropped separately, like ``grid_sample(padding_mode="zeros")``);
    ``padding="border"`` clamps the coordinates to the image first. A TPU gets the same
    function in the form its gathers handle (``_sample_quad``; chosen by the platform
    being compiled for, so the CPU's numbers are those of the four-gather form).
    """
    if padding not in ("zeros", "border"):
        raise ValueError(f"padding must be 'zeros' or 'border', got {padding!r}")
    return jax.lax.platform_dependent(
        x, coords, tpu=functools.partial(_sample_quad, padding=padding),
        default=functools.partial(_sample_corners, padding=padding))


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
