"""SAME-padded stride-1 convolution tuned for XLA:CPU, with a gradient that stays fast
inside ``lax.scan`` and whose memory does not grow with the kernel's size.

XLA's CPU backend has three weak spots this module works around; every other backend
(TPU, GPU) gets XLA's own convolution and gradient (``lax.platform_dependent`` picks at
lowering time), but for one TPU case below. ``benchmarks/conv_in_scan.py`` and
``benchmarks/stgru.py`` print the figures.

* Channel counts that are not a multiple of 8 run slowly: a 7x7 38 -> 38 convolution at
  512x512 takes 385 ms, the same padded to 40 -> 40 with zeros 228 ms. On the CPU both
  channel counts are zero-padded to the next multiple of 8 when that adds at most a
  tenth (``_padded``); the extra outputs are zeros and are sliced off.
* The gradient convolutions of a convolution inside a while loop (``lax.scan``) take a
  slow generic path (an order of magnitude slower than unrolled). The custom VJP writes
  the input gradient as a forward convolution with the flipped, transposed kernel.
* The kernel gradient is one small matmul per tap (``x`` shifted by the tap, transposed,
  times ``g``). Written out directly XLA keeps all kh * kw shifted copies of ``x`` alive
  at once (49 for 7x7: about 930 MB at 512x512x19); here the taps are a ``lax.scan``, so
  one shifted copy exists at a time.

On a TPU a convolution with very few channels in and out (the STGRU's 7x7 3 -> 1 gate
W_ir) wastes the 128-wide matrix unit: libtpu's cost model puts that one convolution,
forward and backward at 512x1024, at 59 M cycles, two thirds of the whole STGRU step.
Written as a sum of shifted, weighted copies of the input (``_shifted_sum``: 147
multiply-adds per pixel on the vector unit) it is 2.4 M (``benchmarks/warp_tpu.py
--conv``). A TPU takes that form where ``kh * kw * Cin * Cout <= _VPU_MACS``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")
_CHANNEL_MULTIPLE = 8
_MAX_PADDING = 0.1  # pad a channel count only if that adds at most this fraction
_VPU_MACS = 256  # a TPU convolution with at most this many multiply-adds per pixel


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding="SAME",
                                        dimension_numbers=_DIMS)


def padded_channels(n: int) -> int:
    """The channel count the CPU convolution runs with: ``n`` rounded up to a multiple of
    8 if that adds at most a tenth, else ``n`` (20 -> 24 made the main job's 64x128
    convolutions slower; 38 -> 40 makes 512x512 ones 1.5x faster)."""
    up = -(-n // _CHANNEL_MULTIPLE) * _CHANNEL_MULTIPLE
    return up if up - n <= _MAX_PADDING * n else n


def _zeros_after(a: jax.Array, axis: int, n: int) -> jax.Array:
    # A concatenation rather than jnp.pad: XLA:CPU runs the convolution of a pad's
    # result about 10% slower.
    if n == 0:
        return a
    shape = list(a.shape)
    shape[axis] = n
    return jnp.concatenate([a, jnp.zeros(shape, a.dtype)], axis=axis)


def _padded(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``_conv`` with both channel counts zero-padded as ``padded_channels`` says."""
    cin, cout = kernel.shape[2:]
    pin, pout = padded_channels(cin) - cin, padded_channels(cout) - cout
    if not pin and not pout:
        return _conv(x, kernel)
    kernel = _zeros_after(_zeros_after(kernel, 2, pin), 3, pout)
    return _conv(_zeros_after(x, x.ndim - 1, pin), kernel)[..., :cout]


def _shifted_sum(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``_conv`` as a sum over taps and input channels of shifted copies of ``x`` times
    the kernel's weights: elementwise work the TPU's vector unit fuses into one loop."""
    kh, kw, cin, cout = kernel.shape
    h, w = x.shape[-3:-1]
    lead = [(0, 0)] * (x.ndim - 3)
    xp = jnp.pad(x, lead + [(kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)])
    out = jnp.zeros(x.shape[:-1] + (cout,), x.dtype)
    for dy in range(kh):
        for dx in range(kw):
            shifted = xp[..., dy:dy + h, dx:dx + w, :]
            out = out + jnp.sum(shifted[..., :, None] * kernel[dy, dx].astype(x.dtype),
                                axis=-2)
    return out


def _tpu(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return (_shifted_sum if kernel.size <= _VPU_MACS else _conv)(x, kernel)


def _forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.platform_dependent(x, kernel, cpu=_padded, tpu=_tpu, default=_conv)


@jax.custom_vjp
def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Cross-correlation of NHWC ``x`` with an HWIO ``kernel`` of odd size, SAME padding."""
    return _forward(x, kernel)


def _fwd(x, kernel):
    kh, kw = kernel.shape[:2]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"conv2d_same needs an odd kernel size; got {kernel.shape}")
    return _forward(x, kernel), (x, kernel)


def kernel_gradient(x: jax.Array, g: jax.Array, kh: int, kw: int) -> jax.Array:
    """d/d kernel [kh,kw,Cin,Cout] of a SAME correlation of ``x`` [...,H,W,Cin] whose
    output has cotangent ``g`` [...,H,W,Cout]: for each tap, ``x`` shifted by the tap
    against ``g``, summed over batch and pixels. The taps run as a scan, so one shifted
    copy of ``x`` is alive at a time."""
    cin, cout = x.shape[-1], g.shape[-1]
    ph, pw = kh // 2, kw // 2
    lead = [(0, 0)] * (x.ndim - 3)
    xp = jnp.pad(x, lead + [(ph, ph), (pw, pw), (0, 0)])
    h, w = x.shape[-3:-1]
    g2 = g.reshape(-1, cout)
    starts = [0] * (x.ndim - 3)

    def tap(_, ij):
        shifted = jax.lax.dynamic_slice(xp, starts + [ij[0], ij[1], 0],
                                        x.shape[:-3] + (h, w, cin))
        return None, jnp.dot(shifted.reshape(-1, cin).T, g2,
                             preferred_element_type=jnp.float32)

    taps = jnp.stack(jnp.meshgrid(jnp.arange(kh), jnp.arange(kw), indexing="ij"),
                     -1).reshape(-1, 2)
    _, dk = jax.lax.scan(tap, None, taps)
    return dk.reshape(kh, kw, cin, cout)


def _cpu_bwd(x, kernel, g):
    kh, kw = kernel.shape[:2]
    # d/dx of a SAME correlation: correlate g with the flipped kernel, in/out swapped.
    dx = _padded(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2).astype(g.dtype))
    dk = kernel_gradient(x, g, kh, kw).astype(kernel.dtype)
    return dx.astype(x.dtype), dk


def _xla_bwd(x, kernel, g):
    return jax.vjp(_conv, x, kernel)[1](g)


def _tpu_bwd(x, kernel, g):
    return jax.vjp(_tpu, x, kernel)[1](g)


def _bwd(res, g):
    x, kernel = res
    return jax.lax.platform_dependent(x, kernel, g, cpu=_cpu_bwd, tpu=_tpu_bwd,
                                      default=_xla_bwd)


conv2d_same.defvjp(_fwd, _bwd)
