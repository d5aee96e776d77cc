"""One STGRU step, eqs. (2)-(6) of the GRFP paper, as pure functions of the parameters.

``stgru_step`` is the one the models run. It computes the equations with fewer, larger
operations than they are written with, and gives the same values and gradients as
``stgru_step_unfused``, which follows the paper line by line (tests/test_stgru.py checks
both against each other and against a numpy transcription):

* one warp for eq. (2) and the image term of eq. (3): ``h_{t-1}`` and ``I_{t-1}`` are
  concatenated on the channel axis and gathered together, so the bilinear weights and
  indices are computed once and each gathered pixel brings C + 3 contiguous values;
* one convolution for eqs. (4) and (5): ``concat[x_t, r_t . w_t]`` (2C channels) with the
  kernel ``[[W_xh, W_xz], [W_hh, W_hz]]`` (2C -> C + G) gives the candidate ``h~_t`` and the
  gate's pre-activation at once. The kernel is assembled inside the step from the stored
  parameters, so the checkpoint layout is the paper's eight parameters either way.

``G``, the update gate's channels, is read from ``W_xz``'s shape: C (vsegjax's original
per-class gate, [k,k,C,C]) or 1 (the GRFP authors' code: one gate map shared by the
classes, [k,k,C,1], plus the per-class bias ``b_z``). Both steps handle both.

The convolutions are ``vsegjax.ops.conv2d_same``, which on the CPU pads channel counts to
multiples of 8 where XLA:CPU runs them faster (38 -> 40 at C = 19).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vsegjax.ops.conv import conv2d_same
from vsegjax.ops.warp import warp

PARAM_NAMES = ("W_ir", "b_r", "W_xh", "W_hh", "W_xz", "W_hz", "b_z", "lambda")
_DIMS = ("NHWC", "HWIO", "NHWC")


def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """SAME-padded stride-1 2-D convolution (cross-correlation), NHWC x HWIO, no bias.

    Uses ``vsegjax.ops.conv2d_same``, whose gradient avoids XLA CPU's slow path for
    convolutions inside ``lax.scan`` (about 10x faster training on CPU).
    """
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        return jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), window_strides=(1, 1), padding="SAME",
            dimension_numbers=_DIMS)
    return conv2d_same(x, kernel.astype(x.dtype))


def _centre(h_prev: jax.Array, x: jax.Array, center_inputs: bool
            ) -> tuple[jax.Array, jax.Array]:
    h_prev = h_prev.astype(jnp.float32)
    x = x.astype(jnp.float32)
    if center_inputs:
        num_classes = x.shape[-1]
        x = x - 1.0 / num_classes
        h_prev = h_prev - 1.0 / num_classes
    return h_prev, x


def _output(params, z, rw, h_tilde, dtype):
    # (6) the new estimate; the softmax is taken in float32.
    logits = (params["lambda"].astype(dtype) * (1.0 - z) * rw + z * h_tilde).astype(jnp.float32)
    return jax.nn.softmax(logits, axis=-1), logits


def _gate_r(params, i_diff, dtype):
    # (3) flow-confidence gate from the photometric error of the warped image.
    return 1.0 - jnp.tanh(jnp.abs(conv2d(i_diff, params["W_ir"]) + params["b_r"].astype(dtype)))


def stgru_step_unfused(params: dict[str, jax.Array], h_prev: jax.Array, x: jax.Array,
                       frame: jax.Array, prev_frame: jax.Array, flow: jax.Array, *,
                       center_inputs: bool = True, dtype: Any = jnp.float32
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Eqs. (2)-(6) exactly as written: two warps and four gate convolutions.

    The reference the fused ``stgru_step`` is tested against; same arguments and results.
    """
    h_prev, x = _centre(h_prev, x, center_inputs)
    w = warp(h_prev, flow).astype(dtype)                                             # (2)
    i_diff = (frame.astype(jnp.float32)
              - warp(prev_frame.astype(jnp.float32), flow)).astype(dtype)
    r = _gate_r(params, i_diff, dtype)                                               # (3)
    x = x.astype(dtype)
    rw = r * w
    h_tilde = conv2d(x, params["W_xh"]) + conv2d(rw, params["W_hh"])                 # (4)
    z = jax.nn.sigmoid(conv2d(x, params["W_xz"]) + conv2d(rw, params["W_hz"])
                       + params["b_z"].astype(dtype))                                # (5)
    h, logits = _output(params, z, rw, h_tilde, dtype)                               # (6)
    return h, logits, r


def fused_gate_kernel(params: dict[str, jax.Array]) -> jax.Array:
    """``[[W_xh, W_xz], [W_hh, W_hz]]``: [k,k,2C,C+G], the kernel of eqs. (4)-(5) over
    ``concat[x_t, r_t . w_t]``; output channels ``:C`` are ``h~_t``, ``C:`` z's argument."""
    top = jnp.concatenate([params["W_xh"], params["W_xz"]], axis=-1)
    bottom = jnp.concatenate([params["W_hh"], params["W_hz"]], axis=-1)
    return jnp.concatenate([top, bottom], axis=2)


def stgru_step(params: dict[str, jax.Array], h_prev: jax.Array, x: jax.Array,
               frame: jax.Array, prev_frame: jax.Array, flow: jax.Array, *,
               center_inputs: bool = True, dtype: Any = jnp.float32
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One STGRU step, eqs. (2)-(6), with the warps and the gate convolutions fused.

    Args:
      params: dict with the keys of ``PARAM_NAMES`` (shapes: ``W_ir`` [k,k,3,1],
        ``b_r`` [1], ``W_xh``/``W_hh`` [k,k,C,C], ``W_xz``/``W_hz`` [k,k,C,G] with G = C
        or 1, ``b_z`` [C], ``lambda`` []).
      h_prev: [B,H,W,C] previous estimate (probabilities) in frame t-1's grid.
      x: [B,H,W,C] static probabilities of frame t.
      frame, prev_frame: [B,H,W,3] images I_t and I_{t-1}.
      flow: [B,H,W,2] flow from frame t to frame t-1 (x, y in pixels).
      center_inputs: subtract 1/C from ``x`` and ``h_prev`` first (see the cell's doc).
      dtype: computation dtype of the convolutions; the result is float32.

    Returns:
      ``(h_t, logits_t, r_t)``: probabilities [B,H,W,C] (float32), the softmax
      argument of eq. (6) [B,H,W,C] (float32) and the gate [B,H,W,1].
    """
    h_prev, x = _centre(h_prev, x, center_inputs)
    c = x.shape[-1]
    # (2) and the warped image of (3) in one gather.
    warped = warp(jnp.concatenate([h_prev, prev_frame.astype(jnp.float32)], axis=-1), flow)
    w = warped[..., :c].astype(dtype)
    # The barrier keeps XLA:CPU from fusing the subtraction and the channel slice into
    # the 3 -> 1 convolution's operand, which runs that convolution 4x slower.
    i_diff = jax.lax.optimization_barrier(
        (frame.astype(jnp.float32) - warped[..., c:]).astype(dtype))
    r = _gate_r(params, i_diff, dtype)                                               # (3)
    rw = r * w
    # (4) and (5)'s convolutions as one over concat[x_t, r_t . w_t].
    both = conv2d(jnp.concatenate([x.astype(dtype), rw], axis=-1),
                  fused_gate_kernel(params).astype(dtype))
    g = params["W_xz"].shape[-1]
    h_tilde = both[..., :c]                                                          # (4)
    z = jax.nn.sigmoid(both[..., c:c + g] + params["b_z"].astype(dtype))             # (5)
    h, logits = _output(params, z, rw, h_tilde, dtype)                               # (6)
    return h, logits, r
