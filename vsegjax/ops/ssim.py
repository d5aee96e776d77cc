"""Per-pixel SSIM in the form used by unsupervised flow losses (3x3 mean windows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def box_filter3(x: jax.Array) -> jax.Array:
    """3x3 mean over H, W of [..., H, W, C], reflect-padded so the shape is kept."""
    pad = [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    xp = jnp.pad(x, pad, mode="reflect")
    h, w = x.shape[-3:-1]
    # Separable sum: three shifted rows, then three shifted columns.
    rows = xp[..., 0:h, :, :] + xp[..., 1:h + 1, :, :] + xp[..., 2:h + 2, :, :]
    return (rows[..., 0:w, :] + rows[..., 1:w + 1, :] + rows[..., 2:w + 2, :]) / 9.0


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    """SSIM map of images in [0, 1], same shape as the inputs [..., H, W, C].

    Identical images give 1 everywhere; the loss form is ``(1 - ssim) / 2``.
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(f"ssim needs two [..., H, W, C] arrays of one shape; got {a.shape} "
                         f"and {b.shape}")
    mu_a = box_filter3(a)
    mu_b = box_filter3(b)
    var_a = box_filter3(a * a) - mu_a ** 2
    var_b = box_filter3(b * b) - mu_b ** 2
    cov = box_filter3(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + C1) * (2 * cov + C2)
    den = (mu_a ** 2 + mu_b ** 2 + C1) * (var_a + var_b + C2)
    return num / den
