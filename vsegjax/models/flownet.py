"""FlowNetS-style optical flow with a correlation layer (the "modified FlowNetS" of EFC).

Three modules:

* ``FlowEncoder``: a per-frame feature pyramid of strided 3x3 convolutions with leaky
  ReLU (slope 0.1); level ``l`` (1-based) has stride ``2**l``.
* ``FlowDecoder``: correlates two frames' features at one level (``vsegjax.ops.correlation``),
  concatenates a 1x1-reduced ("redirected") feature of frame 1, runs further strided
  convolutions, then refines the flow from the coarsest level to the finest skip level:
  at each level a 3x3 conv predicts the flow, which is upsampled and concatenated with
  the skip features and the upsampled decoder features of the next finer level. With
  ``occlusion=True`` every level also predicts an occlusion probability (two 3x3 convs
  with 32 and 1 channels, then a sigmoid), as in the EFC paper's flow branch. The decoder
  takes any feature pyramid, so the EFC joint model can feed its shared encoder's features.
* ``FlowNetS``: encoder + decoder on two RGB frames.

Flow convention (DESIGN.md): the flow from frame 1 to frame 2 maps pixel ``p`` of frame 1
to ``p + flow(p)`` in frame 2, so ``warp(frame2, flow) ~ frame1``. Channel 0 is x.

Units. Each level's 3x3 prediction conv outputs the flow in units of ``flow_scale``
full-resolution pixels (FlowNet's ``div_flow``), so targets have the same magnitude at
every level; ``pyramid`` converts each level to pixels of that level's own grid
(x scaled by ``w_level / W``, y by ``h_level / H``, the ``resize_flow`` rule), and ``flow``
is the finest prediction bilinearly upsampled to the input size, in full-resolution pixels.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vsegjax.ops import correlation, warp

# FlowNet's channel counts per level (strides 2, 4, ..., 128) at width 1.0.
BASE_CHANNELS = (64, 128, 256, 512, 512, 1024, 1024)
LEAK = 0.1


def scaled_channels(channels: int, width: float, minimum: int = 8) -> int:
    """``channels * width`` rounded, at least ``minimum``."""
    return max(minimum, int(round(channels * width)))


def _leaky(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, LEAK)


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize of [B, h, w, C] to [B, height, width, C] (identity when equal)."""
    if x.shape[1:3] == (height, width):
        return x
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method="bilinear")


class FlowEncoder(nn.Module):
    """Feature pyramid of one frame: per level a stride-2 3x3 conv and a 3x3 conv.

    Returns the list of level outputs, finest first (level ``l`` at stride ``2**l``,
    spatial size ``ceil(H / 2**l)``). Apply it to both frames for shared weights
    (``FlowNetS`` stacks them on the batch axis and calls it once).
    """

    channels: Sequence[int] = BASE_CHANNELS[:3]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        del train  # no batch norm or dropout; kept for a uniform signature
        x = x.astype(self.dtype)
        feats = []
        for i, c in enumerate(self.channels):
            x = _leaky(nn.Conv(c, (3, 3), strides=2, dtype=self.dtype, name=f"down{i + 1}")(x))
            x = _leaky(nn.Conv(c, (3, 3), dtype=self.dtype, name=f"conv{i + 1}")(x))
            feats.append(x)
        return feats


class FlowDecoder(nn.Module):
    """Correlation + further encoder convs + multi-scale flow refinement.

    Attributes:
      joint_channels: channels of the 3x3 conv after [correlation, redirected frame-1 feature].
      extra_channels: one entry per further stride-2 level after the correlation level.
      redir_channels: channels of the 1x1 reduction of frame 1's feature.
      max_displacement, corr_stride: of the correlation, in pixels of the correlation level.
      occlusion: also predict an occlusion probability at every level.
      occlusion_channels: hidden channels of the occlusion head (32 in the EFC paper).
      flow_scale: the prediction convs output flow in units of this many full-res pixels.
      up_channels_ratio: channels of the upsampled decoder features = skip channels x this.
      refine_displacement: > 0 adds, at each skip level, the correlation (this range) of
        frame 1's skip feature with frame 2's warped by the upsampled flow (PWC-Net's cost
        volume), so the finer levels see frame 2 and can resolve sub-pixel motion; needs
        ``feat2`` as a pyramid. 0 is FlowNetC's decoder (frame 2 only at the correlation).
      residual: each finer level predicts a correction to the upsampled coarser flow
        (PWC-Net) instead of the whole flow, and every prediction conv starts at zero, so
        an untrained decoder outputs the zero flow rather than a random one (EPE ~8.6 on
        the synthetic set at random init vs 0.70 for zero).
      dtype: computation dtype (outputs are float32).
    """

    joint_channels: int = 256
    extra_channels: Sequence[int] = (512, 512, 1024)
    redir_channels: int = 32
    max_displacement: int = 4
    corr_stride: int = 1
    occlusion: bool = False
    occlusion_channels: int = 32
    flow_scale: float = 20.0
    up_channels_ratio: float = 0.5
    refine_displacement: int = 0
    residual: bool = False
    dtype: Any = jnp.float32

    def _conv(self, features: int, name: str, strides: int = 1, kernel: int = 3,
              zero: bool = False) -> nn.Conv:
        init = {"kernel_init": nn.initializers.zeros} if zero else {}
        return nn.Conv(features, (kernel, kernel), strides=strides, dtype=self.dtype, name=name,
                       **init)

    @nn.compact
    def __call__(self, feats1: Sequence[jax.Array], feat2: jax.Array | Sequence[jax.Array],
                 image_shape: tuple[int, int], train: bool = False) -> dict[str, Any]:
        """Flow from frame 1 to frame 2.

        Args:
          feats1: frame 1's features [B, h_k, w_k, C_k], finest first. The last one is
            correlated with frame 2; all earlier ones are skip connections, and the flow is
            refined down to the finest of them.
          feat2: frame 2's feature at the correlation level (same shape as ``feats1[-1]``),
            or a pyramid whose last entry is that feature.
          image_shape: (H, W) of the input images; sets the output size and the pixel units.
          train: unused (no batch norm or dropout); kept for a uniform signature.

        Returns a dict with ``flow`` [B, H, W, 2] (float32, full-res pixels), ``pyramid``
        (list, finest first, [B, h_k, w_k, 2] in pixels of level k; the levels are the skip
        levels, the correlation level and the extra levels) and, with ``occlusion``,
        ``occlusion`` / ``occlusion_logits`` (lists like ``pyramid``, [B, h_k, w_k]) and
        ``occlusion_full`` [B, H, W] (finest probability upsampled).
        """
        del train
        feats2 = list(feat2) if isinstance(feat2, (list, tuple)) else [feat2]
        feat2 = feats2[-1]
        if self.refine_displacement and len(feats2) != len(feats1):
            raise ValueError(f"FlowDecoder.refine_displacement needs frame 2's pyramid like "
                             f"frame 1's ({len(feats1)} maps); got {len(feats2)}")
        feats1 = list(feats1)
        if not feats1:
            raise ValueError("FlowDecoder needs at least one frame-1 feature map")
        f1 = feats1[-1].astype(self.dtype)
        f2 = jnp.asarray(feat2).astype(self.dtype)
        if f1.shape != f2.shape:
            raise ValueError(f"FlowDecoder: frame 1's correlation-level feature {f1.shape} and "
                             f"frame 2's {f2.shape} differ")
        height, width = image_shape

        corr = _leaky(correlation(f1, f2, self.max_displacement, self.corr_stride))
        redir = _leaky(self._conv(self.redir_channels, "redir", kernel=1)(f1))
        x = jnp.concatenate([corr, redir], axis=-1)
        x = _leaky(self._conv(self.joint_channels, "joint")(x))
        levels = [x]
        for i, c in enumerate(self.extra_channels):
            x = _leaky(self._conv(c, f"extra_down{i + 1}", strides=2)(x))
            x = _leaky(self._conv(c, f"extra_conv{i + 1}")(x))
            levels.append(x)
        skips = [f.astype(self.dtype) for f in feats1[:-1]] + levels  # finest first

        flows: list[jax.Array] = [None] * len(skips)  # normalized units, finest first
        occ_logits: list[jax.Array] = [None] * len(skips)
        feat = flow_n = up_flow = None
        for k in reversed(range(len(skips))):
            skip = skips[k]
            h, w = skip.shape[1:3]
            if feat is None:
                feat = skip
            else:
                up_c = scaled_channels(skip.shape[-1], self.up_channels_ratio)
                up = _leaky(self._conv(up_c, f"up{k}")(_resize(feat, h, w)))
                up_flow = _resize(flow_n, h, w).astype(self.dtype)
                parts = [skip, up, up_flow]
                if self.refine_displacement and k < len(feats1) - 1:
                    pixels = up_flow.astype(jnp.float32) * jnp.asarray(
                        [self.flow_scale * w / width, self.flow_scale * h / height])
                    warped = warp(feats2[k].astype(jnp.float32), pixels)
                    cost = correlation(skip.astype(jnp.float32), warped,
                                       self.refine_displacement)
                    parts.append(_leaky(cost).astype(self.dtype))
                feat = jnp.concatenate(parts, axis=-1)
            flow_n = self._conv(2, f"predict_flow{k}", zero=self.residual)(feat)
            flow_n = flow_n.astype(jnp.float32)
            if self.residual and up_flow is not None:
                flow_n = flow_n + up_flow.astype(jnp.float32)
            flows[k] = flow_n
            if self.occlusion:
                o = _leaky(self._conv(self.occlusion_channels, f"occ{k}_hidden")(feat))
                occ_logits[k] = self._conv(1, f"occ{k}_logit")(o)[..., 0].astype(jnp.float32)

        pyramid = []
        for f in flows:
            h, w = f.shape[1:3]
            pyramid.append(f * jnp.asarray([self.flow_scale * w / width,
                                            self.flow_scale * h / height], jnp.float32))
        out = {"flow": _resize(flows[0], height, width) * self.flow_scale, "pyramid": pyramid}
        if self.occlusion:
            out["occlusion_logits"] = occ_logits
            out["occlusion"] = [jax.nn.sigmoid(o) for o in occ_logits]
            out["occlusion_full"] = _resize(out["occlusion"][0][..., None], height, width)[..., 0]
        return out


class FlowNetS(nn.Module):
    """FlowNetS-style flow network with a correlation layer (FlowNetC-like).

    Attributes:
      width: multiplier on FlowNet's channels (64, 128, 256, 512, 512, 1024, 1024), min 8.
      max_displacement: correlation range in pixels of the correlation level (4 at
        stride 8 covers +-32 full-resolution pixels).
      num_levels: pyramid depth; level l has stride 2**l (6 -> strides 2..64). Use fewer
        for small inputs (any size works: sizes are ceil(H / 2**l), but levels below
        1-2 pixels carry little).
      corr_level: the level where the two frames are correlated (3 -> stride 8).
      finest_level: the finest level the flow is refined to (2 -> stride 4, as FlowNet);
        the final flow is its bilinear upsampling.
      occlusion: also predict occlusion probabilities (for EFC).
      flow_scale: prediction units in full-res pixels (FlowNet's div_flow = 20).
      dtype: computation dtype; parameters stay float32 and outputs are float32.

    ``__call__(frame1, frame2, train=False)`` takes [B, H, W, 3] float frames in [0, 1]
    and returns ``FlowDecoder``'s dict: ``flow`` [B, H, W, 2] from frame 1 to frame 2 in
    pixels (``warp(frame2, flow) ~ frame1``), ``pyramid`` (finest first, levels
    ``finest_level..num_levels``, each in pixels of its own grid) and the occlusion
    outputs when enabled.
    """

    width: float = 1.0
    max_displacement: int = 4
    num_levels: int = 6
    corr_level: int = 3
    finest_level: int = 2
    occlusion: bool = False
    flow_scale: float = 20.0
    residual: bool = False  # see FlowDecoder
    dtype: Any = jnp.float32

    def setup(self):
        if not 1 <= self.num_levels <= len(BASE_CHANNELS):
            raise ValueError(f"FlowNetS.num_levels must be in [1, {len(BASE_CHANNELS)}]; "
                             f"got {self.num_levels}")
        if not 1 <= self.corr_level <= self.num_levels:
            raise ValueError(f"FlowNetS.corr_level must be in [1, num_levels={self.num_levels}]; "
                             f"got {self.corr_level}")
        if not 1 <= self.finest_level <= self.corr_level:
            raise ValueError(f"FlowNetS.finest_level must be in [1, corr_level="
                             f"{self.corr_level}]; got {self.finest_level}")
        if self.width <= 0:
            raise ValueError(f"FlowNetS.width must be > 0; got {self.width}")
        if self.max_displacement < 0:
            raise ValueError(f"FlowNetS.max_displacement must be >= 0; got {self.max_displacement}")
        ch = [scaled_channels(c, self.width) for c in BASE_CHANNELS[:self.num_levels]]
        self.encoder = FlowEncoder(channels=tuple(ch[:self.corr_level]), dtype=self.dtype)
        self.decoder = FlowDecoder(
            joint_channels=ch[self.corr_level - 1],
            extra_channels=tuple(ch[self.corr_level:]),
            redir_channels=scaled_channels(32, self.width),
            max_displacement=self.max_displacement,
            occlusion=self.occlusion,
            flow_scale=self.flow_scale,
            residual=self.residual,
            dtype=self.dtype)

    def __call__(self, frame1: jax.Array, frame2: jax.Array, train: bool = False) -> dict:
        frame1 = jnp.asarray(frame1)
        frame2 = jnp.asarray(frame2)
        if frame1.ndim != 4 or frame1.shape[-1] != 3 or frame1.shape != frame2.shape:
            raise ValueError(f"FlowNetS needs two [B, H, W, 3] frames of one shape; got "
                             f"{frame1.shape} and {frame2.shape}")
        b, h, w = frame1.shape[:3]
        x = jnp.concatenate([frame1, frame2], axis=0).astype(self.dtype) - 0.5
        feats = self.encoder(x, train=train)
        feats1 = [f[:b] for f in feats[self.finest_level - 1:]]
        return self.decoder(feats1, feats[-1][b:], (h, w), train=train)


def init_flownet(module: FlowNetS, rng: jax.Array, height: int = 64, width: int = 64,
                 rng_impl: str | None = "rbg") -> dict:
    """Fresh variables of ``module`` (the parameters do not depend on the input size).

    The init is jitted (an eager one compiles every op separately). With ``rng_impl``
    (default "rbg") the parameters are drawn from a key of that implementation derived
    deterministically from ``rng``: XLA compiles one threefry hash per parameter, which
    makes a CPU init 3-4x slower to compile than with "rbg". ``rng_impl=None`` uses ``rng``
    as it is (bitwise identical across backends and JAX versions).
    """
    if rng_impl is not None:
        rng = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl=rng_impl)
    x = jnp.zeros((1, height, width, 3), jnp.float32)
    return jax.jit(module.init)(rng, x, x)


def flow_decoder_config() -> ml_collections.ConfigDict:
    """The fields of a flow decoder / FlowNetS block (``config.efc.flow``, read by EFC's
    ``make_efc_model`` and by ``flownet_checkpoint``); defaults: a small decoder."""
    return ml_collections.ConfigDict(dict(
        joint_channels=64, extra_channels=(96, 128), redir_channels=32, max_displacement=4,
        occlusion_channels=32, flow_scale=20.0,
        # Cost volume of frame 1 vs warped frame 2 at the skip levels (0 = FlowNetC's).
        refine_displacement=2,
        # Finer levels correct the upsampled coarser flow; zero-initialised predictions.
        residual=True,
        # > 0: a flow-only stride-2 level of this many channels on the frames (EFCModel).
        private_channels=0,
        # Private pyramid depth: levels at strides 2, 4, .. 2**n, channels doubling; the
        # levels past the first are concatenated with the shared features on their grid.
        private_levels=1,
        # separate branch (FlowNetS) only:
        width=0.25, num_levels=5))
