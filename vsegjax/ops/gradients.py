"""Finite-difference gradients and edge-aware weights for smoothness losses (eq. 7 of EFC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def image_gradients(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Forward differences of [..., H, W, C]: (d/dx [..., H, W-1, C], d/dy [..., H-1, W, C])."""
    dx = x[..., :, 1:, :] - x[..., :, :-1, :]
    dy = x[..., 1:, :, :] - x[..., :-1, :, :]
    return dx, dy


def edge_aware_weights(image: jax.Array, alpha: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """``exp(-alpha * mean_c |dI|)`` along x and y: small across image edges, 1 in flat areas.

    Returns ([..., H, W-1, 1], [..., H-1, W, 1]) so they broadcast against any gradient.
    """
    dx, dy = image_gradients(jnp.asarray(image, jnp.float32))
    wx = jnp.exp(-alpha * jnp.mean(jnp.abs(dx), axis=-1, keepdims=True))
    wy = jnp.exp(-alpha * jnp.mean(jnp.abs(dy), axis=-1, keepdims=True))
    return wx, wy


def edge_aware_flow_gradients(flow: jax.Array, image: jax.Array,
                              alpha: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """``|dF| * exp(-alpha |dI|)`` along x and y, the summand of eq. (7) of the EFC paper.

    ``flow`` [..., H, W, 2] and ``image`` [..., H, W, C] share H and W; the flow is not
    smoothed across image edges, where motion boundaries are likely.
    """
    flow = jnp.asarray(flow)
    image = jnp.asarray(image)
    if flow.shape[-3:-1] != image.shape[-3:-1]:
        raise ValueError(f"flow {flow.shape} and image {image.shape} differ in H, W")
    fdx, fdy = image_gradients(flow)
    wx, wy = edge_aware_weights(image, alpha)
    return jnp.abs(fdx) * wx, jnp.abs(fdy) * wy
