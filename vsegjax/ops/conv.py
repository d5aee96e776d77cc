"""SAME-padded stride-1 convolution whose gradient stays fast inside ``lax.scan`` on CPU.

XLA's CPU backend runs the gradient convolutions of a conv that sits inside a while
loop (``lax.scan``) through a slow generic path: for the STGRU's 7x7, C->C convolutions
the backward pass of a scan is an order of magnitude slower than the same loop unrolled
(``benchmarks/conv_in_scan.py`` prints the figures). On the CPU this custom VJP expresses
both gradients as ops that backend handles well: the input gradient as a forward
convolution with the flipped, transposed kernel, and the kernel gradient as one small
matmul per kernel tap (49 for 7x7). On every other backend (TPU, GPU) XLA's own
convolution gradient is used (``lax.platform_dependent`` picks at lowering time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding="SAME",
                                        dimension_numbers=_DIMS)


@jax.custom_vjp
def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Cross-correlation of NHWC ``x`` with an HWIO ``kernel`` of odd size, SAME padding."""
    return _conv(x, kernel)


def _fwd(x, kernel):
    kh, kw = kernel.shape[:2]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"conv2d_same needs an odd kernel size; got {kernel.shape}")
    return _conv(x, kernel), (x, kernel)


def _cpu_bwd(x, kernel, g):
    kh, kw, cin, cout = kernel.shape
    # d/dx of a SAME correlation: correlate g with the flipped kernel, in/out swapped.
    dx = _conv(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2).astype(g.dtype))
    ph, pw = kh // 2, kw // 2
    lead = [(0, 0)] * (x.ndim - 3)
    xp = jnp.pad(x, lead + [(ph, ph), (pw, pw), (0, 0)])
    h, w = x.shape[-3:-1]
    g2 = g.reshape(-1, cout)
    taps = [xp[..., i:i + h, j:j + w, :].reshape(-1, cin).T @ g2
            for i in range(kh) for j in range(kw)]
    dk = jnp.stack(taps).reshape(kh, kw, cin, cout).astype(kernel.dtype)
    return dx.astype(x.dtype), dk


def _xla_bwd(x, kernel, g):
    return jax.vjp(_conv, x, kernel)[1](g)


def _bwd(res, g):
    x, kernel = res
    return jax.lax.platform_dependent(x, kernel, g, cpu=_cpu_bwd, default=_xla_bwd)


conv2d_same.defvjp(_fwd, _bwd)
