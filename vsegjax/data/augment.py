"""Snippet sampling and augmentations applied identically to every frame of a snippet.

Everything here is host-side numpy + OpenCV, meant to run inside grain workers. Every
function is pure: it takes explicit parameters or an ``np.random.Generator`` and
returns a new dict (the input is never modified), so a pipeline built on grain's
per-record generators is deterministic whatever the order or number of workers.

Examples follow the format of ``vsegjax.data.features``. Keys are treated by kind:

    frames              [T, H, W, 3]     bilinear resize, pad 0, colour jitter
    labels              [T, H, W]        nearest resize, pad 255 (ignore)
    flow_fwd, flow_bwd  [T-1, H, W, 2]   bilinear resize AND vectors scaled, pad 0,
                                         x component negated by a horizontal flip
    occ_fwd, occ_bwd    [T-1, H, W]      nearest resize, pad 1 (occluded)
    has_label           [T]              sliced by the window
    label_index         []               index of the labelled frame in ``frames``
    anything else                        passed through unchanged

``finalize`` gives the dtypes the models consume: frames float32 in [0, 1], labels
int32, flows float32, occlusion masks float32 in {0, 1}, has_label bool,
label_index / label_pos int32. ``Augment.apply`` always ends with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from vsegjax.data.features import IGNORE_LABEL

FRAME_KEYS = ("frames",)
LABEL_KEYS = ("labels",)
FLOW_KEYS = ("flow_fwd", "flow_bwd")
OCC_KEYS = ("occ_fwd", "occ_bwd")
PER_FRAME_KEYS = ("frames", "labels", "has_label")
PER_PAIR_KEYS = FLOW_KEYS + OCC_KEYS

# Pixel-centre-aligned nearest neighbour (OpenCV >= 4.5); plain INTER_NEAREST samples
# floor(i / s), half a pixel off the bilinear grid used for frames and flows.
_NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)
_PAD_VALUE = {"frames": 0, "labels": IGNORE_LABEL, "flow_fwd": 0.0, "flow_bwd": 0.0,
              "occ_fwd": 1, "occ_bwd": 1}


def _spatial_keys(ex: Mapping[str, Any]) -> list[str]:
    return [k for k in FRAME_KEYS + LABEL_KEYS + FLOW_KEYS + OCC_KEYS if k in ex]


def _hw(ex: Mapping[str, Any]) -> tuple[int, int]:
    frames = np.asarray(ex["frames"])
    return int(frames.shape[1]), int(frames.shape[2])


def _where(ex: Mapping[str, Any]) -> str:
    if "snippet_id" in ex:
        return f"snippet {int(np.asarray(ex['snippet_id']))}"
    return "snippet"


# --------------------------------------------------------------------------- windows


def sample_window(example: Mapping[str, Any], frames_before: int, frames_after: int,
                  label_frame: str | int = "annotated",
                  rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Cuts the ``frames_before + 1 + frames_after`` frames around a labelled frame.

    Args:
      example: a snippet in the ``features.py`` format.
      frames_before, frames_after: frames kept before / after the labelled frame.
      label_frame: ``"annotated"`` centres the window on ``example["label_index"]``;
        ``"random"`` picks uniformly (with ``rng``) among frames with ``has_label``
        whose window fits inside the snippet; an int centres it on that frame.
      rng: needed for ``"random"``.

    Returns:
      A new dict with every per-frame key sliced to the window, flows and occlusion
      masks sliced to the pairs inside it (``flow_fwd[k]`` links window frames k and
      k+1), ``label_pos`` and ``label_index`` = index of the labelled frame inside the
      window, and ``window_start`` = index of the window's first frame in the snippet.

    Raises:
      ValueError (naming the snippet, its length and the window) when the window does
      not fit, or no labelled frame has room for it in ``"random"`` mode.
    """
    if frames_before < 0 or frames_after < 0:
        raise ValueError(f"frames_before/frames_after must be >= 0, got "
                         f"({frames_before}, {frames_after})")
    num = int(np.asarray(example["frames"]).shape[0])
    length = frames_before + 1 + frames_after
    lo, hi = frames_before, num - 1 - frames_after  # allowed centre positions
    desc = (f"{_where(example)} has {num} frames; a window of {frames_before} before + "
            f"1 + {frames_after} after ({length} frames)")
    if isinstance(label_frame, str) and label_frame == "annotated":
        pos = int(np.asarray(example["label_index"]))
        if not lo <= pos <= hi:
            raise ValueError(f"{desc} does not fit around the annotated frame "
                             f"label_index={pos}; centre must lie in [{lo}, {hi}]")
    elif isinstance(label_frame, str) and label_frame == "random":
        if rng is None:
            raise ValueError("sample_window(label_frame='random') needs an rng")
        has_label = np.asarray(example["has_label"]).astype(bool)
        candidates = [i for i in np.flatnonzero(has_label) if lo <= i <= hi]
        if not candidates:
            raise ValueError(f"{desc} fits around none of the labelled frames "
                             f"{np.flatnonzero(has_label).tolist()}; centre must lie in "
                             f"[{lo}, {hi}]")
        pos = int(candidates[int(rng.integers(len(candidates)))])
    elif isinstance(label_frame, (int, np.integer)) and not isinstance(label_frame, bool):
        pos = int(label_frame)
        if not lo <= pos <= hi:
            raise ValueError(f"{desc} does not fit around frame {pos}; centre must lie "
                             f"in [{lo}, {hi}]")
    else:
        raise ValueError(f"label_frame must be 'annotated', 'random' or an int; "
                         f"got {label_frame!r}")

    start = pos - frames_before
    out = dict(example)
    for key in PER_FRAME_KEYS:
        if key in out:
            out[key] = np.asarray(out[key])[start:start + length]
    for key in PER_PAIR_KEYS:
        if key in out:
            out[key] = np.asarray(out[key])[start:start + length - 1]
    out["label_pos"] = np.int32(frames_before)
    out["label_index"] = np.int32(frames_before)
    out["window_start"] = np.int32(start)
    return out


# --------------------------------------------------------------------------- geometry


def _resize_stack(arr: np.ndarray, height: int, width: int, interp: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape[0] == 0:
        return np.zeros((0, height, width) + arr.shape[3:], arr.dtype)
    out = [cv2.resize(a, (width, height), interpolation=interp) for a in arr]
    out = np.stack(out)
    return out.reshape((arr.shape[0], height, width) + arr.shape[3:])


def resize(ex: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    """Resizes every spatial array to ``height x width``.

    Frames and flows are bilinear (``cv2.INTER_LINEAR``); labels and occlusion masks
    nearest neighbour (``cv2.INTER_NEAREST_EXACT``, pixel-centre aligned). Flow
    vectors are multiplied by ``width / W`` (x) and ``height / H`` (y).
    """
    h, w = _hw(ex)
    if height < 1 or width < 1:
        raise ValueError(f"resize target must be positive, got {height}x{width}")
    out = dict(ex)
    if (height, width) == (h, w):
        return out
    for key in FRAME_KEYS:
        if key in out:
            out[key] = _resize_stack(out[key], height, width, cv2.INTER_LINEAR)
    for key in LABEL_KEYS + OCC_KEYS:
        if key in out:
            out[key] = _resize_stack(out[key], height, width, _NEAREST)
    factors = np.array([width / w, height / h], np.float32)
    for key in FLOW_KEYS:
        if key in out:
            flow = np.asarray(out[key], np.float32)
            out[key] = _resize_stack(flow, height, width, cv2.INTER_LINEAR) * factors
    return out


def random_scale(ex: Mapping[str, Any], scale: float | Sequence[float],
                 rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Rescales the snippet by ``scale`` (a float), or by a factor drawn uniformly from
    ``scale = (low, high)`` with ``rng``. Same factor for both axes and all frames."""
    if isinstance(scale, (int, float, np.floating, np.integer)):
        factor = float(scale)
    else:
        low, high = (float(s) for s in scale)
        if rng is None:
            raise ValueError("random_scale with a (low, high) range needs an rng")
        factor = float(rng.uniform(low, high)) if high > low else low
    if factor <= 0:
        raise ValueError(f"scale must be positive, got {factor}")
    h, w = _hw(ex)
    return resize(ex, max(1, int(round(h * factor))), max(1, int(round(w * factor))))


def pad_to(ex: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    """Pads at the bottom/right up to at least ``height x width`` (frames 0, labels 255,
    flow 0, occlusion 1)."""
    h, w = _hw(ex)
    ph, pw = max(0, height - h), max(0, width - w)
    out = dict(ex)
    if ph == 0 and pw == 0:
        return out
    for key in _spatial_keys(ex):
        arr = np.asarray(out[key])
        widths = [(0, 0), (0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 3)
        out[key] = np.pad(arr, widths, constant_values=_PAD_VALUE[key])
    return out


def crop(ex: Mapping[str, Any], top: int, left: int, height: int, width: int
         ) -> dict[str, Any]:
    """The same ``height x width`` window at (``top``, ``left``) of every spatial array.

    Flow values are unchanged (a crop is a translation of both frames)."""
    h, w = _hw(ex)
    if not (0 <= top and top + height <= h and 0 <= left and left + width <= w):
        raise ValueError(f"crop {height}x{width} at ({top}, {left}) outside the "
                         f"{h}x{w} image of {_where(ex)}")
    out = dict(ex)
    for key in _spatial_keys(ex):
        out[key] = np.asarray(out[key])[:, top:top + height, left:left + width]
    return out


def random_crop(ex: Mapping[str, Any], crop_h: int, crop_w: int,
                rng: np.random.Generator) -> dict[str, Any]:
    """A uniformly placed ``crop_h x crop_w`` crop, identical for all frames; an image
    smaller than the crop is first padded at the bottom/right (see ``pad_to``)."""
    ex = pad_to(ex, crop_h, crop_w)
    h, w = _hw(ex)
    top = int(rng.integers(h - crop_h + 1))
    left = int(rng.integers(w - crop_w + 1))
    return crop(ex, top, left, crop_h, crop_w)


def crop_around(ex: Mapping[str, Any], y: int, x: int, crop_h: int,
                crop_w: int) -> dict[str, Any]:
    """A ``crop_h x crop_w`` crop centred on pixel (y, x) as far as the borders allow."""
    ex = pad_to(ex, crop_h, crop_w)
    h, w = _hw(ex)
    top = int(np.clip(y - crop_h // 2, 0, h - crop_h))
    left = int(np.clip(x - crop_w // 2, 0, w - crop_w))
    return crop(ex, top, left, crop_h, crop_w)


def _labelled_frame(ex: Mapping[str, Any]) -> int:
    return int(ex.get("label_pos", ex.get("label_index", 0)))


def hflip(ex: Mapping[str, Any]) -> dict[str, Any]:
    """Mirrors every spatial array along W; the flow's x component changes sign."""
    out = dict(ex)
    for key in _spatial_keys(ex):
        out[key] = np.ascontiguousarray(np.asarray(out[key])[:, :, ::-1])
    for key in FLOW_KEYS:
        if key in out:
            flow = np.array(out[key], np.float32)
            flow[..., 0] *= -1.0
            out[key] = flow
    return out


def mark_out_of_view(ex: Mapping[str, Any]) -> dict[str, Any]:
    """Sets occlusion to 1 where the flow points outside the image (after a crop such
    pixels have no visible match). Keys pair as (flow_fwd, occ_fwd), (flow_bwd, occ_bwd)."""
    out = dict(ex)
    h, w = _hw(ex)
    for flow_key, occ_key in zip(FLOW_KEYS, OCC_KEYS):
        if flow_key not in out or occ_key not in out:
            continue
        flow = np.asarray(out[flow_key])
        tx = np.arange(w, dtype=np.float32)[None, None, :] + flow[..., 0]
        ty = np.arange(h, dtype=np.float32)[None, :, None] + flow[..., 1]
        outside = (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
        occ = np.asarray(out[occ_key])
        out[occ_key] = np.where(outside, np.ones((), occ.dtype), occ)
    return out


# --------------------------------------------------------------------------- colour


def _float_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    return frames.astype(np.float32)


def _gray(frames: np.ndarray) -> np.ndarray:
    return frames @ np.array([0.299, 0.587, 0.114], np.float32)


def adjust_color(ex: Mapping[str, Any], brightness: float = 1.0, contrast: float = 1.0,
                 saturation: float = 1.0) -> dict[str, Any]:
    """Applies one pixel-wise colour map to every frame (frames become float32 in [0, 1]).

    brightness multiplies; contrast scales around the mean grey of the WHOLE snippet (so
    every frame gets the very same map); saturation blends with the pixel's grey value.
    """
    out = dict(ex)
    x = _float_frames(ex["frames"]) * np.float32(brightness)
    if contrast != 1.0:
        mean = np.float32(_gray(x).mean()) if x.size else np.float32(0)
        x = (x - mean) * np.float32(contrast) + mean
    if saturation != 1.0:
        g = _gray(x)[..., None]
        x = (x - g) * np.float32(saturation) + g
    out["frames"] = np.clip(x, 0.0, 1.0).astype(np.float32)
    return out


def color_jitter(ex: Mapping[str, Any], brightness: float, contrast: float,
                 saturation: float, rng: np.random.Generator) -> dict[str, Any]:
    """Draws factors uniformly in ``[1 - a, 1 + a]`` for each amount ``a`` and applies
    them identically to all frames with ``adjust_color``."""
    factors = [float(rng.uniform(max(0.0, 1.0 - a), 1.0 + a)) if a > 0 else 1.0
               for a in (brightness, contrast, saturation)]
    return adjust_color(ex, *factors)


# --------------------------------------------------------------------------- dtypes


def finalize(ex: Mapping[str, Any]) -> dict[str, Any]:
    """Casts to model dtypes: frames float32 [0, 1], labels int32, flows float32,
    occlusion float32 {0, 1}, has_label bool, label_index / label_pos int32."""
    out = dict(ex)
    out["frames"] = _float_frames(out["frames"])
    if "labels" in out:
        out["labels"] = np.asarray(out["labels"]).astype(np.int32)
    for key in FLOW_KEYS:
        if key in out:
            out[key] = np.asarray(out[key], np.float32)
    for key in OCC_KEYS:
        if key in out:
            out[key] = (np.asarray(out[key]) > 0.5).astype(np.float32)
    if "has_label" in out:
        out["has_label"] = np.asarray(out["has_label"]).astype(bool)
    for key in ("label_index", "label_pos", "window_start"):
        if key in out:
            out[key] = np.int32(np.asarray(out[key]))
    if "label_pos" not in out and "label_index" in out:
        out["label_pos"] = np.int32(np.asarray(out["label_index"]))
    return out


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Augment:
    """Augmentation settings; every field is a plain number/tuple/bool so it maps onto
    an ``ml_collections.ConfigDict`` (``Augment.from_config(config.augment)``).

    resize: (height, width) every snippet is first resized to (e.g. a lower working
      resolution, or fixed-size evaluation), or None.
    scale_range: (low, high) uniform scale factor, or None for no rescaling.
    crop_size: (height, width) random crop (padding smaller images), or None.
    hflip: mirror with probability 1/2.
    color: (brightness, contrast, saturation) jitter amounts, or None.
    occlusion_out_of_view: mark pixels whose flow leaves the (cropped) image occluded.
    """

    resize: tuple[int, int] | None = None
    scale_range: tuple[float, float] | None = (0.75, 1.25)
    crop_size: tuple[int, int] | None = None
    hflip: bool = True
    color: tuple[float, float, float] | None = (0.2, 0.2, 0.2)
    occlusion_out_of_view: bool = True

    def __post_init__(self):
        if self.scale_range is not None:
            lo, hi = self.scale_range
            if not 0 < lo <= hi:
                raise ValueError(f"Augment.scale_range must be 0 < low <= high, got "
                                 f"{self.scale_range}")
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            raise ValueError(f"Augment.resize must be (height, width) >= 1, got {self.resize}")
        if self.crop_size is not None and (len(self.crop_size) != 2
                                           or min(self.crop_size) < 1):
            raise ValueError(f"Augment.crop_size must be (height, width) >= 1, got "
                             f"{self.crop_size}")
        if self.color is not None and (len(self.color) != 3 or min(self.color) < 0):
            raise ValueError(f"Augment.color must be 3 amounts >= 0 (brightness, "
                             f"contrast, saturation), got {self.color}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any | None) -> "Augment":
        """From a dict / ConfigDict with any subset of the fields (unknown names raise)."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        values = dict(config.items() if hasattr(config, "items") else config)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown augment fields {unknown}; known: {sorted(names)}")
        for key in ("resize", "scale_range", "crop_size", "color"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def apply(self, example: Mapping[str, Any], rng: np.random.Generator,
              focus_class: int | None = None) -> dict[str, Any]:
        """resize -> scale -> crop -> flip -> colour -> out-of-view occlusion -> ``finalize``.

        ``focus_class`` (class-uniform sampling): the crop is centred on a random pixel of
        that class in the labelled frame (a random crop if the class is not there).
        """
        ex = finalize(example)
        if self.resize is not None:
            ex = resize(ex, int(self.resize[0]), int(self.resize[1]))
        if self.scale_range is not None:
            ex = random_scale(ex, self.scale_range, rng)
        if self.crop_size is not None:
            ch, cw = int(self.crop_size[0]), int(self.crop_size[1])
            ys, xs = (np.nonzero(ex["labels"][_labelled_frame(ex)] == focus_class)
                      if focus_class is not None else ((), ()))
            if len(ys):
                k = int(rng.integers(len(ys)))
                ex = crop_around(ex, int(ys[k]), int(xs[k]), ch, cw)
            else:
                ex = random_crop(ex, ch, cw, rng)
        if self.hflip and rng.random() < 0.5:
            ex = hflip(ex)
        if self.color is not None:
            ex = color_jitter(ex, *self.color, rng=rng)
        if self.occlusion_out_of_view:
            ex = mark_out_of_view(ex)
        return finalize(ex)
