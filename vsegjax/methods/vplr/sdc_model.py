"""SDC-Net style video prediction / reconstruction (VPLR's propagation model, METHODS.md §3).

A small U-Net looks at past frames (t - num_inputs + 1 .. t) and, in "reconstruction"
mode, also at the target frame t+1. It predicts per pixel a motion vector (pixels, from
frame t+1's grid into frame t: the ``warp`` convention) and a K x K kernel (softmax over
the taps, so it sums to 1), and synthesises frame t+1 by spatially-displaced convolution
of frame t (``ops.sdc.sdc_sample``). Prediction sees only the past; reconstruction also
sees the target and is the better propagator (the VPLR paper's comparison).

``SDCFlow`` (built by ``train.sdc.load_sdc_flow``) serves a trained model's motion as a ``FlowProvider``, the
motion source of VPLR's label and joint propagation.

The heads start at the copy-last-frame solution: the motion conv is zero-initialised
and the kernel's logits favour the centre tap, so an untrained model returns ~frame t
and training only has to improve on that baseline.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vsegjax.models.flow_providers import FlowProvider, Need, _check_frames, _check_need
from vsegjax.ops.sdc import sdc_sample

MODES = ("prediction", "reconstruction")
LEAK = 0.1


def _conv(features: int, name: str, strides: int = 1) -> nn.Conv:
    return nn.Conv(features, (3, 3), strides=strides, name=name)


def _up(x: jax.Array, height: int, width: int) -> jax.Array:
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method="bilinear")


class SDCNet(nn.Module):
    """Frames -> {"motion", "kernel", "image"}: frame t+1 synthesised from frame t.

    Attributes:
      mode: "prediction" (past frames only) or "reconstruction" (also the target t+1).
      num_inputs: past frames given, t - num_inputs + 1 .. t (the last one is sampled).
      kernel_size: K of the per-pixel K x K kernel (odd).
      width: channels at full resolution; level l has ``min(width * 2**l, 4 * width)``.
      depth: number of stride-2 levels of the encoder (the decoder mirrors it).
      max_motion: motion is ``max_motion * tanh(raw)`` pixels, bounding the search.
      centre_logit: initial logit of the centre tap (others 0): the starting kernel.
    """

    mode: str = "reconstruction"
    num_inputs: int = 2
    kernel_size: int = 3
    width: int = 32
    depth: int = 3
    max_motion: float = 16.0
    centre_logit: float = 5.0

    def _check(self, frames: jax.Array, target: jax.Array | None) -> None:
        if self.mode not in MODES:
            raise ValueError(f"SDCNet.mode must be one of {list(MODES)}; got {self.mode!r}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"SDCNet.kernel_size must be odd and >= 1; got {self.kernel_size}")
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B, T, H, W, 3]; got shape {tuple(frames.shape)}")
        if frames.shape[1] != self.num_inputs:
            raise ValueError(f"frames has {frames.shape[1]} frames on axis 1; this SDCNet "
                             f"takes num_inputs={self.num_inputs} (frames t-{self.num_inputs - 1}"
                             f"..t)")
        if self.mode == "reconstruction":
            if target is None:
                raise ValueError("target (frame t+1) is required in 'reconstruction' mode; "
                                 "use mode='prediction' to predict from past frames only")
            want = (frames.shape[0],) + tuple(frames.shape[2:])
            if tuple(target.shape) != want:
                raise ValueError(f"target must be [B, H, W, 3] = {want}; got shape "
                                 f"{tuple(target.shape)}")

    @nn.compact
    def __call__(self, frames: jax.Array, target: jax.Array | None = None) -> dict[str, jax.Array]:
        """``frames`` [B, T, H, W, 3] in [0, 1] (T = num_inputs, last = frame t); ``target``
        [B, H, W, 3] frame t+1 (reconstruction only; ignored in prediction mode)."""
        frames = jnp.asarray(frames, jnp.float32)
        self._check(frames, target)
        b, t, h, w, _ = frames.shape
        # Frames stacked on channels, centred on 0 so the first layer starts balanced.
        x = jnp.moveaxis(frames, 1, -2).reshape(b, h, w, t * 3) - 0.5
        if self.mode == "reconstruction":
            x = jnp.concatenate([x, jnp.asarray(target, jnp.float32) - 0.5], axis=-1)

        act = lambda y: nn.leaky_relu(y, LEAK)  # noqa: E731
        chans = [min(self.width * 2 ** l, 4 * self.width) for l in range(self.depth + 1)]
        x = act(_conv(chans[0], "enc0_a")(x))
        x = act(_conv(chans[0], "enc0_b")(x))
        skips = [x]
        for l in range(1, self.depth + 1):
            x = act(_conv(chans[l], f"enc{l}_down", strides=2)(x))
            x = act(_conv(chans[l], f"enc{l}_b")(x))
            skips.append(x)
        for l in range(self.depth - 1, -1, -1):
            skip = skips[l]
            x = _up(x, skip.shape[1], skip.shape[2])
            x = act(_conv(chans[l], f"dec{l}_a")(jnp.concatenate([x, skip], axis=-1)))
            x = act(_conv(chans[l], f"dec{l}_b")(x))

        raw = nn.Conv(2, (3, 3), kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.zeros, name="motion_head")(x)
        motion = self.max_motion * jnp.tanh(raw)
        taps = self.kernel_size * self.kernel_size
        centre = jax.nn.one_hot(taps // 2, taps) * self.centre_logit
        logits = nn.Conv(taps, (3, 3), kernel_init=nn.initializers.zeros,
                         bias_init=lambda *_: centre, name="kernel_head")(x)
        kernel = jax.nn.softmax(logits, axis=-1)
        image = sdc_sample(frames[:, -1], motion, kernel)
        return {"motion": motion, "kernel": kernel, "image": image}


def sdc_config(**overrides: Any) -> ml_collections.ConfigDict:
    """The model fields of ``config.sdc`` with their defaults (see ``SDCNet``)."""
    c = ml_collections.ConfigDict(dict(mode="reconstruction", num_inputs=2, kernel_size=3,
                                       width=32, depth=3, max_motion=16.0, centre_logit=5.0))
    c.update(overrides)
    return c


def make_sdc_model(s: ml_collections.ConfigDict) -> SDCNet:
    """``SDCNet`` from an ``sdc`` block (its model fields: ``sdc_config``)."""
    if s.mode not in MODES:
        raise ValueError(f"config field sdc.mode: {s.mode!r}; choose from {list(MODES)}")
    if int(s.num_inputs) < 1:
        raise ValueError(f"config field sdc.num_inputs: must be >= 1; got {s.num_inputs}")
    k = int(s.kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"config field sdc.kernel_size: must be odd and >= 1; got {k}")
    return SDCNet(mode=s.mode, num_inputs=int(s.num_inputs), kernel_size=k,
                  width=int(s.width), depth=int(s.depth),
                  max_motion=float(s.max_motion), centre_logit=float(s.centre_logit))


# --------------------------------------------------------------------------- as a flow source


class SDCFlow(FlowProvider):
    """A trained ``SDCNet``'s motion vectors as optical flow (VPLR's propagation motion).

    ``flow_bwd[k]`` (frame k+1 -> k, so ``warp(frames[k], flow_bwd[k]) ~ frames[k+1]``) is
    the model's motion for target k+1 from frames k-n+1..k (earlier frames repeat frame 0
    at the start); ``flow_fwd[k]`` is the same on the time-reversed video, target k from
    frames k+1, k+2, ... VPLR propagates with a "reconstruction" model (it sees both frames
    of the pair); a "prediction" model gives extrapolated motion instead. The kernel is
    not used: labels move by the motion alone (``ops.sdc.sdc_sample_labels``).
    """

    def __init__(self, model: SDCNet, variables: Any):
        self.model = model
        self.variables = variables
        self._apply = jax.jit(lambda v, f, t: model.apply(v, f, t)["motion"])

    def _motions(self, frames: jax.Array) -> jax.Array:
        """[B, T-1, H, W, 2]: motion from frame k+1's grid into frame k of ``frames``."""
        b, t, h, w, _ = frames.shape
        n = self.model.num_inputs
        padded = jnp.concatenate([jnp.repeat(frames[:, :1], n - 1, axis=1), frames], axis=1)
        inputs = jnp.stack([padded[:, k:k + n] for k in range(t - 1)], axis=1)
        motion = self._apply(self.variables, inputs.reshape((-1, n, h, w, 3)),
                             frames[:, 1:].reshape((-1, h, w, 3)))
        return motion.reshape(b, t - 1, h, w, 2)

    def flows(self, frames: Any, *, need: Need = "both") -> tuple[Any, Any]:
        _check_need(need)
        _check_frames(frames)
        frames = jnp.asarray(frames)
        frames = (frames.astype(jnp.float32) / 255.0 if frames.dtype == jnp.uint8
                  else frames.astype(jnp.float32))
        fwd = self._motions(frames[:, ::-1])[:, ::-1] if need in ("both", "fwd") else None
        bwd = self._motions(frames) if need in ("both", "bwd") else None
        return fwd, bwd
