"""Correlation (cost volume) between two feature maps, as in FlowNetC/FlowNetS-style nets."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def correlation(f1: jax.Array, f2: jax.Array, max_displacement: int, stride: int = 1) -> jax.Array:
    """Cost volume ``out[..., i, j, k] = mean_c f1[i, j, c] * f2[i + dy_k, j + dx_k, c]``.

    ``f1``, ``f2`` are [..., H, W, C]. Displacements run over ``range(-d, d + 1, stride)``
    in y (outer) and x (inner), so ``k = iy * n + ix`` with ``n = 2 * (d // stride) + 1``
    channels per axis; ``f2`` is zero outside the image. Built from static shifts, so it
    is a plain sum of products that XLA fuses, with no gather.
    """
    if f1.shape != f2.shape:
        raise ValueError(f"correlation needs equal shapes; got {f1.shape} and {f2.shape}")
    if max_displacement < 0 or stride < 1:
        raise ValueError(f"need max_displacement >= 0 and stride >= 1; got "
                         f"{max_displacement}, {stride}")
    d = max_displacement
    h, w = f1.shape[-3:-1]
    pad = [(0, 0)] * (f2.ndim - 3) + [(d, d), (d, d), (0, 0)]
    f2p = jnp.pad(f2, pad)
    outs = []
    for dy in range(-d, d + 1, stride):
        for dx in range(-d, d + 1, stride):
            shifted = f2p[..., d + dy:d + dy + h, d + dx:d + dx + w, :]
            outs.append(jnp.mean(f1 * shifted, axis=-1))
    return jnp.stack(outs, axis=-1)
