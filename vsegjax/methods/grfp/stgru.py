"""STGRU cell and the GRFP recurrent model (GRFP paper, "Semantic Video Segmentation
by Gated Recurrent Flow Propagation", sections 3.1-3.3).

The cell fuses the static segmentation of frame t with the previous estimate warped
along the optical flow, eqs. (2)-(6) of the GRFP paper::

    w_t  = warp(h_{t-1}, flow_{t->t-1})                                    (2)
    r_t  = 1 - tanh(|W_ir * (I_t - warp(I_{t-1}, flow_{t->t-1})) + b_r|)   (3)
    h~_t = W_xh * x_t + W_hh * (r_t . w_t)                                  (4)
    z_t  = sigmoid(W_xz * x_t + W_hz * (r_t . w_t) + b_z)                   (5)
    h_t  = softmax(lambda * (1 - z_t) . r_t . w_t + z_t . h~_t)             (6)

``*`` is a SAME-padded 2-D convolution (7x7 by default, no bias), ``.`` elementwise,
``x_t`` the softmax of the static network's logits and ``r_t`` a single-channel
flow-confidence gate broadcast over the classes. ``warp`` is the backward bilinear
warp of :mod:`vsegjax.ops.warp`: bringing frame t-1 into frame t's grid uses the
flow from t to t-1.

Choices the paper leaves open (all documented on the fields below):

* ``center_inputs``: the probabilities ``x_t`` and ``h_{t-1}`` have ``1/C`` subtracted
  before they enter the cell, and the centred values are used everywhere in
  eqs. (2)-(6) (the convolutions and the ``lambda`` term). ``h_{t-1}`` is centred
  *before* warping, so pixels whose flow points outside the image carry 0 (no class
  evidence) rather than ``-1/C``. Inside the image this equals centring ``w_t``.
* ``identity_init``: ``W_xh`` and ``W_hh`` start as ``scale * identity`` at the
  centre tap (plus tiny noise), so the untrained cell already passes both the
  static input and the warped estimate through (argmax-preserving).
* The state carried between frames is the probability map ``h_t``; the cell also
  returns the softmax argument of eq. (6) (``logits_t``) so losses can use
  ``log_softmax(logits_t)`` stably. The first frame of a direction uses the static
  probabilities as its state (``h_0 = x_0``).
* ``update_gate``: the paper writes ``z_t`` without its shape. ``'per_class'`` (the
  default) gives every class its own gate map: ``W_xz``, ``W_hz`` are [k,k,C,C].
  ``'shared'`` is the GRFP authors' code: [k,k,C,1] kernels give one gate map for all
  classes, and the per-class bias ``b_z`` [C] shifts it per class. That halves the
  cell's convolution FLOPs (19.6 against 37.2 GFLOP per frame at 512x512, C = 19) and
  loads the authors' trained cells. docs/stgru.md gives the effect on the main job.
* Forward-backward fusion (``mode='fwbw'``): the paper fuses the two directions at
  the labelled frame without specifying how. Here a 1x1 convolution (submodule
  ``fusion``) maps ``concat([log h_fwd, log h_bwd])`` (2C channels) to C channels,
  initialised to ``0.5 * log h_fwd + 0.5 * log h_bwd`` (zero bias), followed by
  ``log_softmax``. At initialisation this is the normalised geometric mean of the two
  distributions, so two equal directions give back that same distribution.

The step itself is :func:`vsegjax.methods.grfp.stgru_equations.stgru_step`: the same equations with
the two warps and the four gate convolutions fused (one gather, one convolution), the
parameters stored as the paper names them. ``dtype`` is the computation dtype of its
convolutions and gates (bfloat16 allowed); parameters and outputs stay float32.

The recurrence is a ``jax.lax.scan`` (the step is traced once, so compile time does
not grow with the number of frames); ``remat=True`` wraps the step in
``jax.checkpoint`` so training memory does not keep every step's activations.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vsegjax.methods.grfp.stgru_equations import PARAM_NAMES, stgru_step, stgru_step_unfused
from vsegjax.ops.warp import check_flow

__all__ = ["GRFP", "PARAM_NAMES", "STGRUCell", "stgru_step", "stgru_step_unfused"]

Mode = Literal["forward", "backward", "fwbw"]
UpdateGate = Literal["per_class", "shared"]
UPDATE_GATES = ("per_class", "shared")


def _identity_kernel_init(scale: float, noise_std: float) -> Callable:
    """HWIO kernel = scale * identity at the centre tap + N(0, noise_std) everywhere."""

    def init(key, shape, dtype=jnp.float32):
        kh, kw, cin, cout = shape
        if cin != cout:
            raise ValueError(f"identity init needs a square kernel, got shape {shape}")
        eye = jnp.zeros(shape, dtype).at[kh // 2, kw // 2].set(scale * jnp.eye(cin, dtype=dtype))
        return eye + noise_std * jax.random.normal(key, shape, dtype)

    return init


class STGRUCell(nn.Module):
    """The STGRU cell of the GRFP paper; one direction's parameters.

    Parameters (exactly these keys): ``W_ir`` [k,k,3,1], ``b_r`` [1], ``W_xh``,
    ``W_hh`` [k,k,C,C], ``W_xz``, ``W_hz`` [k,k,C,C] (``update_gate='per_class'``) or
    [k,k,C,1] (``'shared'``), ``b_z`` [C], ``lambda`` [].

    ``__call__`` runs one step; :meth:`scan` runs the recurrence over a time-major
    sequence with ``jax.lax.scan``.
    """

    num_classes: int
    kernel_size: int = 7
    # W_xh / W_hh start as scale * identity at the centre tap (+ N(0, 0.01) noise);
    # the original GRFP code uses 6 for both. Otherwise lecun-normal.
    identity_init: bool = True
    identity_scale_xh: float = 6.0
    identity_scale_hh: float = 6.0
    lambda_init: float = 1.0
    center_inputs: bool = True
    # W_ir ~ N(0, gate_init_std): for frames in [0, 1] the untrained gate is near 1
    # (trust the flow) and falls slowly with the photometric error.
    gate_init_std: float = 0.05
    # W_xz / W_hz ~ N(0, gate_init_std_z): z starts near 0.5 everywhere.
    gate_init_std_z: float = 0.01
    # 'per_class': W_xz / W_hz are [k,k,C,C]; 'shared': [k,k,C,1] (the authors' code).
    update_gate: UpdateGate = "per_class"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        k, c = self.kernel_size, self.num_classes
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {k}")
        if c < 2:
            raise ValueError(f"num_classes must be >= 2, got {c}")
        if self.update_gate not in UPDATE_GATES:
            raise ValueError(f"update_gate must be one of {UPDATE_GATES}, got "
                             f"{self.update_gate!r}")
        g = c if self.update_gate == "per_class" else 1
        if self.identity_init:
            xh_init = _identity_kernel_init(self.identity_scale_xh, 0.01)
            hh_init = _identity_kernel_init(self.identity_scale_hh, 0.01)
        else:
            xh_init = hh_init = nn.initializers.lecun_normal()
        pd = self.param_dtype
        ir_init = nn.initializers.normal(self.gate_init_std)
        z_init = nn.initializers.normal(self.gate_init_std_z)
        self.W_ir = self.param("W_ir", ir_init, (k, k, 3, 1), pd)
        self.b_r = self.param("b_r", nn.initializers.zeros, (1,), pd)
        self.W_xh = self.param("W_xh", xh_init, (k, k, c, c), pd)
        self.W_hh = self.param("W_hh", hh_init, (k, k, c, c), pd)
        self.W_xz = self.param("W_xz", z_init, (k, k, c, g), pd)
        self.W_hz = self.param("W_hz", z_init, (k, k, c, g), pd)
        self.b_z = self.param("b_z", nn.initializers.zeros, (c,), pd)
        self.lam = self.param("lambda", nn.initializers.constant(self.lambda_init), (), pd)

    def param_dict(self) -> dict[str, jax.Array]:
        """The eight parameters keyed as in the paper (creates them when initialising)."""
        return {"W_ir": self.W_ir, "b_r": self.b_r, "W_xh": self.W_xh, "W_hh": self.W_hh,
                "W_xz": self.W_xz, "W_hz": self.W_hz, "b_z": self.b_z, "lambda": self.lam}

    def _check(self, x: jax.Array) -> None:
        if x.shape[-1] != self.num_classes:
            raise ValueError(f"STGRU built for {self.num_classes} classes got input with "
                             f"{x.shape[-1]} channels (shape {x.shape})")

    def __call__(self, h_prev: jax.Array, x: jax.Array, frame: jax.Array,
                 prev_frame: jax.Array, flow: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One step: ``(h_t, logits_t, r_t)`` from [B,H,W,C] ``h_prev`` (probabilities,
        frame t-1), ``x`` (static probabilities, frame t), [B,H,W,3] frames and the
        flow [B,H,W,2] from frame t to frame t-1."""
        self._check(x)
        check_flow(flow.shape, x.shape)
        return stgru_step(self.param_dict(), h_prev, x, frame, prev_frame, flow,
                          center_inputs=self.center_inputs, dtype=self.dtype)

    def scan(self, h0: jax.Array, xs: jax.Array, frames: jax.Array, prev_frames: jax.Array,
             flows: jax.Array, *, reverse: bool = False, remat: bool = False
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Runs the recurrence over N time-major steps with ``jax.lax.scan``.

        ``xs`` [N,B,H,W,C] static probabilities, ``frames``/``prev_frames``
        [N,B,H,W,3] (the image of each step and of the step it is warped from),
        ``flows`` [N,B,H,W,2] (each step's flow towards its source frame). With
        ``reverse=True`` the steps run from index N-1 down to 0 (outputs stay in input
        order). Returns ``(h_last, logits [N,B,H,W,C], r [N,B,H,W,1])``.
        """
        self._check(xs)
        check_flow(flows.shape, xs.shape, name="flows")
        params = self.param_dict()

        def step(h, inputs):
            x, frame, prev_frame, flow = inputs
            h, logits, r = stgru_step(params, h, x, frame, prev_frame, flow,
                                      center_inputs=self.center_inputs, dtype=self.dtype)
            return h, (logits, r)

        if remat:
            step = jax.checkpoint(step, prevent_cse=False)
        h_last, (logits, r) = jax.lax.scan(
            step, h0.astype(jnp.float32), (xs, frames, prev_frames, flows), reverse=reverse)
        return h_last, logits, r


def _average_fusion_init(num_classes: int) -> Callable:
    """1x1 HWIO kernel [1,1,2C,C] = [0.5 I; 0.5 I]: the mean of the two log-probabilities."""

    def init(key, shape, dtype=jnp.float32):
        del key
        if tuple(shape) != (1, 1, 2 * num_classes, num_classes):
            raise ValueError(f"unexpected fusion kernel shape {shape}")
        eye = 0.5 * jnp.eye(num_classes, dtype=dtype)
        return jnp.concatenate([eye, eye], axis=0)[None, None]

    return init


def _time_major(x: jax.Array) -> jax.Array:
    return jnp.moveaxis(x, 1, 0)


def _batch_major(x: jax.Array) -> jax.Array:
    return jnp.moveaxis(x, 0, 1)


def _concat_time(parts: list[jax.Array]) -> jax.Array:
    parts = [p for p in parts if p.shape[1] > 0]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


class GRFP(nn.Module):
    """Gated Recurrent Flow Propagation over a T-frame window (GRFP paper, fig. 2).

    ``mode='forward'`` propagates frames 0..label_pos (later frames are ignored),
    ``'backward'`` frames T-1 down to label_pos (earlier frames are ignored) with its
    own STGRU parameters, ``'fwbw'`` runs both and fuses them at ``label_pos`` with a
    1x1 convolution initialised to the average of the two log-probabilities.

    Parameter tree: ``{'forward': {W_ir, b_r, W_xh, W_hh, W_xz, W_hz, b_z, lambda}}``,
    ``{'backward': {...}}``, or both plus ``{'fusion': {'kernel' [1,1,2C,C],
    'bias' [C]}}`` for ``'fwbw'``.
    """

    num_classes: int
    mode: Mode = "forward"
    kernel_size: int = 7
    identity_init: bool = True
    center_inputs: bool = True
    remat: bool = False
    identity_scale_xh: float = 6.0
    identity_scale_hh: float = 6.0
    lambda_init: float = 1.0
    gate_init_std: float = 0.05
    update_gate: UpdateGate = "per_class"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _cell(self, name: str) -> STGRUCell:
        return STGRUCell(
            num_classes=self.num_classes, kernel_size=self.kernel_size,
            identity_init=self.identity_init, identity_scale_xh=self.identity_scale_xh,
            identity_scale_hh=self.identity_scale_hh, lambda_init=self.lambda_init,
            center_inputs=self.center_inputs, gate_init_std=self.gate_init_std,
            update_gate=self.update_gate, dtype=self.dtype, param_dtype=self.param_dtype,
            name=name)

    def _check_inputs(self, static_logits, frames, flow_fwd, flow_bwd, label_pos):
        if self.mode not in ("forward", "backward", "fwbw"):
            raise ValueError(f"mode must be 'forward', 'backward' or 'fwbw', got {self.mode!r}")
        if static_logits.ndim != 5 or static_logits.shape[-1] != self.num_classes:
            raise ValueError(f"static_logits must be [B,T,H,W,{self.num_classes}], "
                             f"got shape {static_logits.shape}")
        b, t, h, w, _ = static_logits.shape
        if frames.shape != (b, t, h, w, 3):
            raise ValueError(f"frames must be [B,T,H,W,3] = {(b, t, h, w, 3)}, got {frames.shape}")
        if isinstance(label_pos, bool) or not isinstance(label_pos, (int, np.integer)):
            raise TypeError("label_pos must be a static Python int, got "
                            f"{type(label_pos).__name__}")
        if not 0 <= label_pos < t:
            raise ValueError(f"label_pos {label_pos} outside the window [0, {t})")
        needed = {"forward": ("flow_bwd",), "backward": ("flow_fwd",),
                  "fwbw": ("flow_fwd", "flow_bwd")}[self.mode]
        for name, flow in (("flow_fwd", flow_fwd), ("flow_bwd", flow_bwd)):
            if name not in needed:
                continue
            if flow is None:
                if t > 1:
                    raise ValueError(f"mode {self.mode!r} needs {name}")
                continue
            if flow.shape != (b, t - 1, h, w, 2):
                raise ValueError(f"{name} must be [B,T-1,H,W,2] = {(b, t - 1, h, w, 2)}, "
                                 f"got {flow.shape}")

    @nn.compact
    def __call__(self, static_logits: jax.Array, frames: jax.Array,
                 flow_fwd: jax.Array | None, flow_bwd: jax.Array | None,
                 label_pos: int) -> dict[str, jax.Array]:
        """Propagates the static segmentation through the window.

        Args:
          static_logits: [B,T,H,W,C] per-frame logits of the static segmenter.
          frames: [B,T,H,W,3] float images (the gate is tuned for values in [0, 1]).
          flow_fwd: [B,T-1,H,W,2], ``flow_fwd[:, t]`` maps frame t -> t+1 (backward
            direction; may be None in 'forward' mode).
          flow_bwd: [B,T-1,H,W,2], ``flow_bwd[:, t]`` maps frame t+1 -> t (forward
            direction; may be None in 'backward' mode).
          label_pos: static Python int, the labelled frame within the window.

        Returns a dict with
          ``logits`` [B,H,W,C]: log-probabilities at ``label_pos`` (fused in 'fwbw');
          ``seq_logits`` [B,T,H,W,C]: per-frame log-probabilities of the forward pass
            ('backward' mode: of the backward pass); frames the pass does not reach
            hold the static log-probabilities;
          ``r`` [B,T,H,W,1]: the gates of that pass (1 where it computed no gate:
            frame 0 forward, frame T-1 backward, frames it does not reach);
          ``static_logits`` [B,H,W,C]: static log-probabilities at ``label_pos``;
          'forward'/'fwbw': ``logits_fwd``; 'backward'/'fwbw': ``logits_bwd``;
          'fwbw' also ``seq_logits_bwd`` and ``r_bwd``.
        """
        self._check_inputs(static_logits, frames, flow_fwd, flow_bwd, label_pos)
        b, t, h, w, c = static_logits.shape
        lp = int(label_pos)
        static_lp = jax.nn.log_softmax(static_logits.astype(jnp.float32), axis=-1)
        probs = jnp.exp(static_lp)
        frames = frames.astype(jnp.float32)
        ones = jnp.ones((b, t, h, w, 1), jnp.float32)
        out: dict[str, jax.Array] = {"static_logits": static_lp[:, lp]}

        fwd = bwd = None
        if self.mode in ("forward", "fwbw"):
            cell = self._cell("forward")
            if lp == 0:
                cell.param_dict()  # same parameter tree whatever label_pos is
                seq, r = static_lp, ones
            else:
                # Steps t = 1..lp: warp h_{t-1} into frame t with the flow t -> t-1.
                _, logits, gates = cell.scan(
                    probs[:, 0],
                    _time_major(probs[:, 1:lp + 1]),
                    _time_major(frames[:, 1:lp + 1]),
                    _time_major(frames[:, 0:lp]),
                    _time_major(flow_bwd[:, 0:lp].astype(jnp.float32)),
                    remat=self.remat)
                logp = jax.nn.log_softmax(_batch_major(logits), axis=-1)
                seq = _concat_time([static_lp[:, :1], logp, static_lp[:, lp + 1:]])
                r = _concat_time([ones[:, :1], _batch_major(gates), ones[:, lp + 1:]])
            fwd = (seq, r)
            out["logits_fwd"] = seq[:, lp]
        if self.mode in ("backward", "fwbw"):
            cell = self._cell("backward")
            if lp == t - 1:
                cell.param_dict()
                seq, r = static_lp, ones
            else:
                # Steps t = T-2 down to lp: warp h_{t+1} into frame t with the flow t -> t+1.
                _, logits, gates = cell.scan(
                    probs[:, t - 1],
                    _time_major(probs[:, lp:t - 1]),
                    _time_major(frames[:, lp:t - 1]),
                    _time_major(frames[:, lp + 1:t]),
                    _time_major(flow_fwd[:, lp:t - 1].astype(jnp.float32)),
                    reverse=True, remat=self.remat)
                logp = jax.nn.log_softmax(_batch_major(logits), axis=-1)
                seq = _concat_time([static_lp[:, :lp], logp, static_lp[:, t - 1:]])
                r = _concat_time([ones[:, :lp], _batch_major(gates), ones[:, t - 1:]])
            bwd = (seq, r)
            out["logits_bwd"] = seq[:, lp]

        if self.mode == "forward":
            out.update(logits=fwd[0][:, lp], seq_logits=fwd[0], r=fwd[1])
        elif self.mode == "backward":
            out.update(logits=bwd[0][:, lp], seq_logits=bwd[0], r=bwd[1])
        else:
            fused = nn.Conv(c, (1, 1), kernel_init=_average_fusion_init(c),
                            bias_init=nn.initializers.zeros, dtype=self.dtype,
                            param_dtype=self.param_dtype, name="fusion")(
                jnp.concatenate([out["logits_fwd"], out["logits_bwd"]], axis=-1))
            out.update(logits=jax.nn.log_softmax(fused.astype(jnp.float32), axis=-1),
                       seq_logits=fwd[0], r=fwd[1], seq_logits_bwd=bwd[0], r_bwd=bwd[1])
        return out
