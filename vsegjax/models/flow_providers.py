"""Flow providers: one interface for learned, classical (OpenCV) and dataset flow.

Every provider returns the flows of a snippet in the ``vsegjax.data.features`` convention:

    flow_fwd [B, T-1, H, W, 2]   flow_fwd[:, t]: frame t -> t+1, warp(frames[:, t+1], flow_fwd[:, t]) ~ frames[:, t]
    flow_bwd [B, T-1, H, W, 2]   flow_bwd[:, t]: frame t+1 -> t, warp(frames[:, t], flow_bwd[:, t]) ~ frames[:, t+1]

These are the directions ``vsegjax.ops.warp`` needs (backward warping). For the forward
STGRU, which brings ``h_{t-1}`` into frame t's grid, "the flow t -> t-1" is
``flow_bwd[:, t-1]``; the backward STGRU (bringing ``h_{t+1}`` into frame t) uses
``flow_fwd[:, t]``.

    provider = make_flow_provider(config.flow)     # flow.source = 'farneback', ...
    flow_fwd, flow_bwd = provider.from_batch(batch)             # any provider
    flow_fwd, flow_bwd = provider.flows(batch["frames"])        # all but DatasetFlow
    _, flow_bwd = provider.flows(frames, need="bwd")            # skip the unused direction

Providers:

* ``LearnedFlow``: a ``FlowNetS`` with its variables; pure JAX, so it runs inside ``jit``;
  all 2 B (T-1) pairs go through the network in one call. Frozen by default
  (``stop_gradient`` on variables and outputs); ``trainable=True`` lets gradients reach the
  variables passed to ``flows(frames, variables=...)``.
* ``OpenCVFlow``: Farneback or DIS on the host (numpy in, numpy out). Inside ``jit`` (a
  traced input) it goes through ``jax.pure_callback`` (``as_jax_fn``); the callback sees
  the whole (gathered) array on one host, so on multi-host runs compute it in the input
  pipeline instead (call ``flows`` on the host batch before making global arrays).
* ``DatasetFlow``: reads ``batch['flow_fwd']`` / ``batch['flow_bwd']`` (precomputed or
  ground-truth flow stored in the dataset).
"""

from __future__ import annotations

import abc
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Literal, Mapping

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from vsegjax.models.flownet import FlowNetS, init_flownet
from vsegjax.models.flownet_checkpoint import architecture, load_flownet_variables

Need = Literal["both", "fwd", "bwd"]
SOURCES = ("dataset", "farneback", "dis", "flownet")
# Datasets whose snippets carry flow_fwd / flow_bwd (named in DatasetFlow's error).
DATASETS_WITH_FLOW = ("synthetic_video (exact flow)",
                      "datasets built with precomputed or ground-truth flow (e.g. Sintel "
                      "read through vsegjax.data.flow_io)")


def _check_need(need: str) -> None:
    if need not in ("both", "fwd", "bwd"):
        raise ValueError(f"need must be 'both', 'fwd' or 'bwd'; got {need!r}")


def _check_frames(frames: Any) -> tuple[int, ...]:
    shape = tuple(np.shape(frames))
    if len(shape) != 5 or shape[-1] != 3 or shape[1] < 2:
        raise ValueError(f"frames must be [B, T, H, W, 3] with T >= 2; got shape {shape}")
    return shape


class FlowProvider(abc.ABC):
    """Gives (flow_fwd, flow_bwd) [B, T-1, H, W, 2] for a snippet batch; see the module doc.

    ``need`` = 'fwd' or 'bwd' computes one direction and returns None for the other.
    """

    trainable: bool = False

    @abc.abstractmethod
    def flows(self, frames: Any, *, need: Need = "both") -> tuple[Any, Any]:
        """Flows of ``frames`` [B, T, H, W, 3] (float in [0, 1], or uint8 where supported)."""

    def from_batch(self, batch: Mapping[str, Any], *, need: Need = "both") -> tuple[Any, Any]:
        """Flows for a batch dict (the uniform entry point: every provider supports it)."""
        if "frames" not in batch:
            raise ValueError(f"{type(self).__name__}: batch has no 'frames' (keys: {sorted(batch)})")
        return self.flows(batch["frames"], need=need)

    def __call__(self, batch: Mapping[str, Any], *, need: Need = "both") -> tuple[Any, Any]:
        return self.from_batch(batch, need=need)


# --------------------------------------------------------------------------- learned


class LearnedFlow(FlowProvider):
    """A ``FlowNetS`` (or any module with the same call) as a flow provider.

    ``flows(frames, variables=None, train=False)`` uses ``variables`` when given (pass the
    trained copy from the train state so gradients reach it), else the ones given here.
    Frames are float [0, 1] (uint8 is divided by 255). When ``trainable`` is False, the
    variables and the outputs go through ``jax.lax.stop_gradient``.
    """

    def __init__(self, module: FlowNetS, variables: Any, trainable: bool = False):
        self.module = module
        self.variables = variables
        self.trainable = bool(trainable)

    def pair_flow(self, frame1: jax.Array, frame2: jax.Array, variables: Any = None,
                  train: bool = False) -> jax.Array:
        """Flow [N, H, W, 2] from ``frame1`` to ``frame2`` ([N, H, W, 3] each)."""
        variables = self.variables if variables is None else variables
        if not self.trainable:
            variables = jax.lax.stop_gradient(variables)
        out = self.module.apply(variables, frame1, frame2, train=train)["flow"]
        return out if self.trainable else jax.lax.stop_gradient(out)

    def flows(self, frames: Any, *, need: Need = "both", variables: Any = None,
              train: bool = False) -> tuple[Any, Any]:
        _check_need(need)
        b, t, h, w, _ = _check_frames(frames)
        frames = jnp.asarray(frames)
        frames = (frames.astype(jnp.float32) / 255.0 if frames.dtype == jnp.uint8
                  else frames.astype(jnp.float32))
        first, second = frames[:, :-1], frames[:, 1:]
        if need == "both":  # one network call for both directions
            f1 = jnp.concatenate([first, second], axis=0)
            f2 = jnp.concatenate([second, first], axis=0)
        elif need == "fwd":
            f1, f2 = first, second
        else:
            f1, f2 = second, first
        n = f1.shape[0] * (t - 1)
        flow = self.pair_flow(f1.reshape(n, h, w, 3), f2.reshape(n, h, w, 3), variables, train)
        flow = flow.reshape(-1, b, t - 1, h, w, 2)
        if need == "both":
            return flow[0], flow[1]
        return (flow[0], None) if need == "fwd" else (None, flow[0])


# --------------------------------------------------------------------------- OpenCV


DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
               "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
FARNEBACK_DEFAULTS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5,
                          poly_sigma=1.2, flags=0)
# DIS setters that may be overridden: name -> cv2 method.
DIS_SETTERS = {"finest_scale": "setFinestScale", "patch_size": "setPatchSize",
               "patch_stride": "setPatchStride",
               "gradient_descent_iterations": "setGradientDescentIterations",
               "variational_refinement_iterations": "setVariationalRefinementIterations",
               "variational_refinement_alpha": "setVariationalRefinementAlpha",
               "variational_refinement_delta": "setVariationalRefinementDelta",
               "variational_refinement_gamma": "setVariationalRefinementGamma",
               "use_mean_normalization": "setUseMeanNormalization",
               "use_spatial_propagation": "setUseSpatialPropagation"}


def to_gray_uint8(frames: np.ndarray) -> np.ndarray:
    """[..., H, W, 3] uint8 RGB, or float RGB in [0, 1], -> [..., H, W] uint8 grey."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = np.round(np.clip(frames.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    gray = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(gray).astype(np.uint8)


def farneback_params_for_size(height: int, width: int, pyr_scale: float = 0.5, levels: int = 3,
                              winsize: int = 15, min_coarse: int = 16, **rest) -> dict:
    """Farneback parameters shrunk for small images.

    The pyramid stops before its coarsest level drops under ``min_coarse`` pixels, and the
    averaging window is at most a quarter of the short side (odd, at least 5).
    """
    side = min(height, width)
    if 0.0 < pyr_scale < 1.0 and side > min_coarse:
        fit = 1 + int(math.floor(math.log(side / min_coarse) / math.log(1.0 / pyr_scale)))
    else:
        fit = 1
    levels = max(1, min(int(levels), fit))
    cap = max(5, side // 4)
    cap -= 1 - cap % 2  # odd
    winsize = max(3, min(int(winsize), cap))
    return dict(pyr_scale=pyr_scale, levels=levels, winsize=winsize, **rest)


class OpenCVFlow(FlowProvider):
    """Classical flow on the host: ``method='farneback'`` or ``'dis'``.

    Farneback keyword parameters (cv2.calcOpticalFlowFarneback): ``pyr_scale`` 0.5,
    ``levels`` 3, ``winsize`` 15, ``iterations`` 3, ``poly_n`` 5, ``poly_sigma`` 1.2,
    ``flags`` 0; with ``adapt_to_size`` (default) levels and window shrink for small
    images (``farneback_params_for_size``). DIS: ``preset`` 'ultrafast' | 'fast' |
    'medium' (default) and any of ``DIS_SETTERS`` (e.g. ``finest_scale=0``).
    ``num_workers`` > 1 computes pairs in threads (OpenCV releases the GIL).

    Both compute on grey uint8 images, flow from the first image to the second in the
    vsegjax convention (OpenCV's ``prev(y, x) ~ next(y + fy, x + fx)`` is exactly it).
    """

    def __init__(self, method: str = "farneback", *, adapt_to_size: bool = True,
                 num_workers: int = 0, **params: Any):
        method = method.lower()
        if method not in ("farneback", "dis"):
            raise ValueError(f"OpenCVFlow method must be 'farneback' or 'dis'; got {method!r}")
        self.method = method
        self.adapt_to_size = adapt_to_size
        self.num_workers = int(num_workers)
        if method == "farneback":
            unknown = set(params) - set(FARNEBACK_DEFAULTS) - {"min_coarse"}
            if unknown:
                raise ValueError(f"unknown Farneback parameters {sorted(unknown)}; known: "
                                 f"{sorted(FARNEBACK_DEFAULTS)} and min_coarse")
            self.params = {**FARNEBACK_DEFAULTS, **params}
        else:
            preset = str(params.pop("preset", "medium")).lower()
            if preset not in DIS_PRESETS:
                raise ValueError(f"DIS preset must be one of {sorted(DIS_PRESETS)}; got {preset!r}")
            unknown = set(params) - set(DIS_SETTERS)
            if unknown:
                raise ValueError(f"unknown DIS parameters {sorted(unknown)}; known: "
                                 f"preset and {sorted(DIS_SETTERS)}")
            self.preset = preset
            self.params = dict(params)

    # -- one pair
    def _farneback_fn(self, height: int, width: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        p = dict(self.params)
        min_coarse = p.pop("min_coarse", 16)
        if self.adapt_to_size:
            p = farneback_params_for_size(height, width, min_coarse=min_coarse, **p)

        def fn(a, b):
            return cv2.calcOpticalFlowFarneback(
                a, b, None, p["pyr_scale"], p["levels"], p["winsize"], p["iterations"],
                p["poly_n"], p["poly_sigma"], p["flags"])
        return fn

    def _dis_object(self):
        dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
        for name, value in self.params.items():
            getattr(dis, DIS_SETTERS[name])(value)
        return dis

    def pair_flows(self, gray1: np.ndarray, gray2: np.ndarray) -> np.ndarray:
        """Flows [N, H, W, 2] float32 from ``gray1[n]`` to ``gray2[n]`` ([N, H, W] uint8)."""
        n, h, w = gray1.shape
        if self.method == "farneback":
            fn = self._farneback_fn(h, w)
            run = lambda i: fn(gray1[i], gray2[i])  # noqa: E731
        else:
            # A DIS object keeps state between calls and is not thread-safe: one per pair.
            run = lambda i: self._dis_object().calc(gray1[i], gray2[i], None)  # noqa: E731
        if self.num_workers > 1 and n > 1:
            with ThreadPoolExecutor(min(self.num_workers, n)) as pool:
                out = list(pool.map(run, range(n)))
        else:
            out = [run(i) for i in range(n)]
        if not out:
            return np.zeros((0, h, w, 2), np.float32)
        return np.stack(out).astype(np.float32)

    # -- snippets on the host
    def host_flows(self, frames: np.ndarray, need: Need = "both") -> tuple[Any, Any]:
        """numpy version of ``flows``; also accepts extra leading dims [..., T, H, W, 3]."""
        _check_need(need)
        frames = np.asarray(frames)
        if frames.ndim < 4 or frames.shape[-1] != 3 or frames.shape[-4] < 2:
            raise ValueError(f"frames must be [..., T, H, W, 3] with T >= 2; got {frames.shape}")
        lead, (t, h, w) = frames.shape[:-4], frames.shape[-4:-1]
        gray = to_gray_uint8(frames).reshape(-1, t, h, w)
        first = gray[:, :-1].reshape(-1, h, w)
        second = gray[:, 1:].reshape(-1, h, w)
        shape = lead + (t - 1, h, w, 2)
        fwd = self.pair_flows(first, second).reshape(shape) if need != "bwd" else None
        bwd = self.pair_flows(second, first).reshape(shape) if need != "fwd" else None
        return fwd, bwd

    def as_jax_fn(self, need: Need = "both") -> Callable[[jax.Array], tuple[Any, Any]]:
        """A jit-able ``frames -> (flow_fwd, flow_bwd)`` through ``jax.pure_callback``.

        Shapes are static (taken from the traced input); the callback runs on the host with
        the full array. Gradients do not flow through it (classical flow is a constant).
        """
        _check_need(need)

        def fn(frames):
            if jax.process_count() > 1:
                raise ValueError(
                    f"{self.method} flow inside a jitted step on {jax.process_count()} "
                    "processes: the host callback would see one process's rows only and "
                    "gather them onto one device; compute it in the input pipeline (as "
                    "flow.source=farneback|dis does for training)")
            frames = jnp.asarray(frames)
            shape = _check_frames(frames)
            out_shape = shape[:1] + (shape[1] - 1,) + shape[2:4] + (2,)
            spec = jax.ShapeDtypeStruct(out_shape, jnp.float32)

            def host(x):
                fwd, bwd = self.host_flows(np.asarray(x), need)
                return tuple(f for f in (fwd, bwd) if f is not None)

            n_out = 2 if need == "both" else 1
            outs = jax.pure_callback(host, (spec,) * n_out, jax.lax.stop_gradient(frames),
                                     vmap_method="broadcast_all")
            if need == "both":
                return outs[0], outs[1]
            return (outs[0], None) if need == "fwd" else (None, outs[0])
        return fn

    def flows(self, frames: Any, *, need: Need = "both") -> tuple[Any, Any]:
        """numpy on concrete input; ``as_jax_fn`` (pure_callback) when traced under jit."""
        if isinstance(frames, jax.core.Tracer):
            return self.as_jax_fn(need)(frames)
        _check_frames(frames)
        return self.host_flows(np.asarray(frames), need)


# --------------------------------------------------------------------------- dataset


class DatasetFlow(FlowProvider):
    """Precomputed or ground-truth flow read from the batch (``flow_fwd``, ``flow_bwd``)."""

    def flows(self, frames: Any, *, need: Need = "both") -> tuple[Any, Any]:
        raise TypeError("DatasetFlow reads the flow stored in the batch: call "
                        "from_batch(batch) (or provider(batch)), not flows(frames)")

    def from_batch(self, batch: Mapping[str, Any], *, need: Need = "both") -> tuple[Any, Any]:
        _check_need(need)
        keys = {"both": ("flow_fwd", "flow_bwd"), "fwd": ("flow_fwd",), "bwd": ("flow_bwd",)}[need]
        for key in keys:
            if key not in batch:
                raise ValueError(
                    f"flow.source='dataset' needs batch[{key!r}], which this batch lacks (keys: "
                    f"{sorted(batch)}); datasets that store flow: "
                    f"{', '.join(DATASETS_WITH_FLOW)}. For datasets without flow use "
                    f"flow.source='farneback', 'dis' or 'flownet'")
        if "frames" in batch:
            shape = tuple(np.shape(batch["frames"]))
            if len(shape) == 5:
                want = (shape[0], shape[1] - 1) + shape[2:4] + (2,)
                for key in keys:
                    if tuple(np.shape(batch[key])) != want:
                        raise ValueError(f"batch[{key!r}] has shape {tuple(np.shape(batch[key]))};"
                                         f" frames {shape} need [B, T-1, H, W, 2] = {want}")
        fwd = batch["flow_fwd"] if need != "bwd" else None
        bwd = batch["flow_bwd"] if need != "fwd" else None
        return fwd, bwd


# --------------------------------------------------------------------------- config


def make_flow_provider(flow: Any) -> FlowProvider:
    """The provider named by ``flow.source``, ``flow`` being a config's flow block (or a
    dict of its fields).

    Fields (all but ``source`` optional):
      source: 'dataset' | 'farneback' | 'dis' | 'flownet'.
      params: dict of OpenCV parameters (``OpenCVFlow``), e.g. {'winsize': 11}.
      dis_preset: 'ultrafast' | 'fast' | 'medium' (default) for 'dis'.
      num_workers: threads for OpenCV (0 = sequential).
      checkpoint: trained FlowNetS (``load_flownet_variables``). Empty/None: FRESH RANDOM
        parameters (seed ``flow.seed``, default 0) - meaningful only if ``trainable``.
      width (1.0), num_levels (6), max_displacement (4), occlusion (False), residual
        (False), flow_scale (20.0): FlowNetS config; with a checkpoint of a run, its
        config.json's (``checkpoint_architecture``), and a block value that differs is
        an error.
      trainable (False): let gradients reach the FlowNetS variables.
    """
    if "source" not in flow:
        raise ValueError("a flow provider is built from the flow block (config.flow, with "
                         f"flow.source in {list(SOURCES)}); got fields {sorted(flow)}")
    get = flow.get if hasattr(flow, "get") else (lambda k, d=None: getattr(flow, k, d))
    source = get("source", None)
    if source not in SOURCES:
        raise ValueError(f"config field flow.source must be one of {list(SOURCES)}; got {source!r}")
    if source == "dataset":
        return DatasetFlow()
    if source in ("farneback", "dis"):
        params = dict(get("params", None) or {})
        if source == "dis":
            preset = get("dis_preset", None)
            if preset is not None:
                if str(preset).lower() not in DIS_PRESETS:
                    raise ValueError(f"config field flow.dis_preset must be one of "
                                     f"{sorted(DIS_PRESETS)}; got {preset!r}")
                params.setdefault("preset", preset)
        try:
            return OpenCVFlow(source, num_workers=int(get("num_workers", 0) or 0), **params)
        except ValueError as e:
            raise ValueError(f"config field flow.params: {e}") from e
    width = get("width", 1.0)
    if not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"config field flow.width must be a number > 0; got {width!r}")
    trainable = get("trainable", False)
    if not isinstance(trainable, bool):
        raise ValueError(f"config field flow.trainable must be True or False; got {trainable!r}")
    try:
        checkpoint = get("checkpoint", None)
        arch = architecture(get, checkpoint)
        module = FlowNetS(width=float(arch["width"]), num_levels=int(arch["num_levels"]),
                          max_displacement=int(arch["max_displacement"]),
                          occlusion=bool(arch["occlusion"]), residual=bool(arch["residual"]),
                          flow_scale=float(arch["flow_scale"]))
        if checkpoint:
            variables = load_flownet_variables(checkpoint, module)
        else:
            variables = init_flownet(module, jax.random.key(int(get("seed", 0))))
    except ValueError as e:
        msg = str(e)
        if msg.startswith("FlowNetS."):  # FlowNetS.num_levels -> config field flow.num_levels
            msg = "config field flow." + msg[len("FlowNetS."):]
        elif not msg.startswith(("flow.", "config")):
            msg = f"config field flow: {msg}"
        raise ValueError(msg) from e
    return LearnedFlow(module, variables, trainable=trainable)
