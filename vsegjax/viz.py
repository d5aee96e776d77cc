"""Pictures for humans: class palettes, label overlays, the flow colour wheel, gate maps,
titled image grids and snippet previews.

Everything is numpy + OpenCV on the host (no JAX): images are uint8 [H, W, 3] RGB,
labels are integer class ids with 255 = ignore, flow is [H, W, 2] (x, y) in pixels.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from vsegjax import files

IGNORE_LABEL = 255

# --------------------------------------------------------------------------- palettes

CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)], dtype=np.uint8)

# SegNet's 11-class CamVid (ids 0..10; 11 = Unlabelled is ignored, void colour 0,0,0).
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
    "pedestrian", "bicyclist")
CAMVID_PALETTE = np.array([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
    (0, 128, 192)], dtype=np.uint8)

# The synthetic video dataset's classes, coloured like their Cityscapes counterparts.
SYNTHETIC_CLASSES = (
    "road", "sidewalk", "building", "vegetation", "sky", "car", "person", "bicycle",
    "pole", "sign")
SYNTHETIC_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (107, 142, 35), (70, 130, 180),
    (0, 0, 142), (220, 20, 60), (119, 11, 32), (153, 153, 153), (220, 220, 0)],
    dtype=np.uint8)

_NAMED_PALETTES = {
    "cityscapes": CITYSCAPES_PALETTE,
    "camvid": CAMVID_PALETTE,
    "synthetic": SYNTHETIC_PALETTE,
}


def generic_palette(num_classes: int) -> np.ndarray:
    """A deterministic uint8 [C, 3] palette of well-separated colours for any C."""
    if not 0 < num_classes <= IGNORE_LABEL:
        raise ValueError(f"num_classes must be in [1, {IGNORE_LABEL}], got {num_classes}")
    i = np.arange(num_classes)
    # Golden-ratio hue steps keep neighbouring ids far apart on the hue circle; cycling
    # saturation/value separates ids whose hues come close after many steps.
    hue = (i * 0.6180339887) % 1.0
    sat = np.array([0.85, 0.55, 1.0])[i % 3]
    val = np.array([0.95, 0.75, 0.6])[(i // 3) % 3]
    hsv = np.stack([hue * 180.0, sat * 255.0, val * 255.0], axis=-1)
    hsv = np.round(hsv).clip(0, 255).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def palette_for(spec: int | str) -> np.ndarray:
    """Palette by dataset name ('cityscapes', 'camvid', 'synthetic') or class count.

    A count of 19, 11 or 10 gives the Cityscapes, CamVid or synthetic palette; any
    other count gets :func:`generic_palette`.
    """
    if isinstance(spec, str):
        key = spec.lower()
        if key not in _NAMED_PALETTES:
            raise ValueError(f"unknown palette {spec!r}; known: {sorted(_NAMED_PALETTES)}")
        return _NAMED_PALETTES[key].copy()
    n = int(spec)
    for palette in _NAMED_PALETTES.values():
        if len(palette) == n:
            return palette.copy()
    return generic_palette(n)


def _as_palette(palette: np.ndarray | str | int) -> np.ndarray:
    if isinstance(palette, (str, int, np.integer)):
        return palette_for(palette)
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or not 0 < len(palette) <= IGNORE_LABEL:
        raise ValueError(f"palette must be [C, 3] with 1 <= C <= {IGNORE_LABEL}; "
                         f"got shape {palette.shape}")
    return palette.clip(0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- labels

def colorize_labels(labels: np.ndarray, palette: np.ndarray | str | int,
                    ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Maps class ids [..., H, W] to uint8 RGB [..., H, W, 3]; 255 gets ``ignore_color``.

    Ids outside the palette (other than 255) raise: a silent colour would hide a bug.
    """
    palette = _as_palette(palette)
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    bad = ((labels < 0) | (labels >= len(palette))) & (labels != IGNORE_LABEL)
    if bad.any():
        raise ValueError(f"label ids {np.unique(labels[bad])[:10].tolist()} are outside the "
                         f"{len(palette)}-class palette (and not {IGNORE_LABEL} = ignore)")
    lut = np.zeros((IGNORE_LABEL + 1, 3), np.uint8)
    lut[:len(palette)] = palette
    lut[IGNORE_LABEL] = np.asarray(ignore_color, np.uint8)
    return lut[labels.astype(np.intp)]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray | str | int,
            alpha: float = 0.5) -> np.ndarray:
    """Blends label colours over ``image`` (weight ``alpha``); ignore pixels keep the image."""
    image = to_uint8_rgb(image)
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels shape {labels.shape} != image size {image.shape[:2]}")
    colours = colorize_labels(labels, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    blended = np.round(blended).clip(0, 255).astype(np.uint8)
    return np.where((labels == IGNORE_LABEL)[..., None], image, blended)


# --------------------------------------------------------------------------- flow

def _make_color_wheel() -> np.ndarray:
    """The Middlebury colour wheel (Baker et al. 2011), float [55, 3] RGB in [0, 255]."""
    # Segment lengths chosen by Baker et al. to make hue steps roughly perceptually even.
    segments = ((15, (255, 0, 0), (255, 255, 0)),    # red -> yellow       (RY)
                (6, (255, 255, 0), (0, 255, 0)),     # yellow -> green     (YG)
                (4, (0, 255, 0), (0, 255, 255)),     # green -> cyan       (GC)
                (11, (0, 255, 255), (0, 0, 255)),    # cyan -> blue        (CB)
                (13, (0, 0, 255), (255, 0, 255)),    # blue -> magenta     (BM)
                (6, (255, 0, 255), (255, 0, 0)))     # magenta -> red      (MR)
    rows = []
    for n, start, end in segments:
        start, end = np.array(start, float), np.array(end, float)
        step = np.floor(255.0 * np.arange(n) / n)[:, None] / 255.0
        rows.append(start + step * (end - start))
    return np.concatenate(rows)


COLOR_WHEEL = _make_color_wheel()
# Middlebury marks unknown flow with values above 1e9.
_UNKNOWN_FLOW = 1e9


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Middlebury colour coding of flow [..., H, W, 2] -> uint8 RGB [..., H, W, 3].

    Hue is the direction (+x right = red, +y down = yellow, -x = cyan, -y = blue-violet),
    saturation the magnitude divided by ``max_flow`` (default: the largest magnitude in
    ``flow``); zero flow is white, magnitudes above ``max_flow`` are darkened, unknown
    (non-finite or > 1e9) flow is black.
    """
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape [..., H, W, 2]; got {flow.shape}")
    u, v = flow[..., 0], flow[..., 1]
    unknown = ~np.isfinite(u) | ~np.isfinite(v) | (np.abs(u) > _UNKNOWN_FLOW) | (
        np.abs(v) > _UNKNOWN_FLOW)
    u = np.where(unknown, 0.0, u)
    v = np.where(unknown, 0.0, v)
    rad = np.hypot(u, v)
    if max_flow is None:
        max_flow = float(rad.max()) if rad.size else 0.0
    elif max_flow <= 0:
        raise ValueError(f"max_flow must be positive, got {max_flow}")
    norm = max(float(max_flow), np.finfo(np.float32).eps)
    u, v, rad = u / norm, v / norm, rad / norm

    ncols = len(COLOR_WHEEL)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]; -1 (and +1) is the +x direction
    angle = np.where(angle >= 1.0, -1.0, angle)  # +x is exactly red whatever the sign of 0
    fk = (angle + 1.0) / 2.0 * (ncols - 1)
    k0 = np.floor(fk).astype(np.intp)
    k1 = (k0 + 1) % ncols
    f = (fk - k0)[..., None]
    col = ((1.0 - f) * COLOR_WHEEL[k0] + f * COLOR_WHEEL[k1]) / 255.0
    inside = (rad <= 1.0)[..., None]
    # Inside the unit magnitude fade towards white; beyond it darken to flag saturation.
    col = np.where(inside, 1.0 - rad[..., None] * (1.0 - col), col * 0.75)
    col = np.where(unknown[..., None], 0.0, col)
    return np.floor(255.0 * col.clip(0.0, 1.0)).astype(np.uint8)


def flow_color_wheel_legend(size: int = 128) -> np.ndarray:
    """uint8 [size, size, 3] legend: the colour of each flow vector from the centre.

    Image axes (x right, y down) are the flow axes, so a pixel right of the centre shows
    the colour of rightward flow. The disc has radius ``max_flow``; outside is white.
    """
    if size < 2:
        raise ValueError(f"legend size must be >= 2, got {size}")
    c = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([(xs - c) / c, (ys - c) / c], axis=-1)
    image = flow_to_color(flow, max_flow=1.0)
    outside = np.hypot(flow[..., 0], flow[..., 1]) > 1.0
    image[outside] = 255
    return image


def gate_to_color(r: np.ndarray) -> np.ndarray:
    """Colours a [0, 1] map [H, W] (or [H, W, 1]) with viridis -> uint8 RGB [H, W, 3].

    Values are clipped to [0, 1]; NaN shows as black.
    """
    r = np.asarray(r, dtype=np.float32)
    if r.ndim == 3 and r.shape[-1] == 1:
        r = r[..., 0]
    if r.ndim != 2:
        raise ValueError(f"gate map must be [H, W] or [H, W, 1]; got {r.shape}")
    nan = np.isnan(r)
    grey = np.round(np.nan_to_num(r, nan=0.0).clip(0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    rgb[nan] = 0
    return rgb


# --------------------------------------------------------------------------- panels

def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Any displayable [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] array -> uint8 [H, W, 3].

    Floats are taken as [0, 1] and bools as 0/255; alpha is dropped.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image[..., :3] if image.shape[-1] != 1 else image[..., 0]
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"cannot display an array of shape {image.shape} as an image")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.floating):
        image = np.round(np.nan_to_num(image.astype(np.float32)).clip(0.0, 1.0) * 255.0)
    image = image.clip(0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image)


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _font_scale(tile_width: int) -> float:
    # Scale the text with the tile so titles stay legible on big tiles and fit small ones.
    return float(np.clip(tile_width / 500.0, 0.3, 1.0))


def title_bar_height(tile_width: int) -> int:
    """Height in pixels of the title bar :func:`make_panel` puts above a tile this wide."""
    scale = _font_scale(tile_width)
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, 1)
    return int(text_h + baseline + 6)


def make_panel(images: Sequence[np.ndarray], titles: Sequence[str] | None = None,
               ncols: int | None = None, pad: int = 2,
               background: Sequence[int] = (48, 48, 48)) -> np.ndarray:
    """Lays images out in a grid with a title bar above each tile -> uint8 RGB image.

    Grey or float [0, 1] inputs are converted; every tile is resized to the first one's
    size. With ``titles=None`` there are no title bars. ``ncols`` defaults to
    ceil(sqrt(n)). Output size: rows * (title_bar_height(w) + h) + (rows + 1) * pad by
    ncols * w + (ncols + 1) * pad.
    """
    if len(images) == 0:
        raise ValueError("make_panel needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    tiles = [to_uint8_rgb(im) for im in images]
    h, w = tiles[0].shape[:2]
    n = len(tiles)
    ncols = int(ncols) if ncols is not None else math.ceil(math.sqrt(n))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    nrows = math.ceil(n / ncols)
    bar = title_bar_height(w) if titles is not None else 0
    cell_h = bar + h
    panel = np.empty((nrows * cell_h + (nrows + 1) * pad, ncols * w + (ncols + 1) * pad, 3),
                     np.uint8)
    panel[:] = np.asarray(background, np.uint8)
    scale = _font_scale(w)
    for k, tile in enumerate(tiles):
        if tile.shape[:2] != (h, w):
            # Nearest when enlarging keeps label/flow pixels crisp; area when shrinking.
            shrink = tile.shape[0] * tile.shape[1] > h * w
            tile = cv2.resize(tile, (w, h), interpolation=cv2.INTER_AREA if shrink
                              else cv2.INTER_NEAREST)
        row, col = divmod(k, ncols)
        y0 = pad + row * (cell_h + pad)
        x0 = pad + col * (w + pad)
        if bar:
            panel[y0:y0 + bar, x0:x0 + w] = 0
            bar_img = np.ascontiguousarray(panel[y0:y0 + bar, x0:x0 + w])
            cv2.putText(bar_img, str(titles[k]), (3, bar - 4), _FONT, scale, (255, 255, 255),
                        1, cv2.LINE_AA)  # drawn into the bar only, so long titles clip there
            panel[y0:y0 + bar, x0:x0 + w] = bar_img
        panel[y0 + bar:y0 + cell_h, x0:x0 + w] = tile
    return panel


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an RGB (or grey / float [0, 1]) image as PNG, atomically; makes parent dirs."""
    path = os.fspath(path)  # not pathlib: Path("gs://b/x") would collapse to "gs:/b/x"
    image = np.asarray(image)
    grey = image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1)
    rgb = to_uint8_rgb(image)
    out = rgb[..., 0] if grey else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # cv2 wants BGR
    ok, encoded = cv2.imencode(".png", out)
    if not ok:
        raise ValueError(f"{path}: OpenCV failed to encode a PNG of shape {image.shape}")
    files.atomic_write_bytes(path, encoded.tobytes())


def snippet_preview(example: Mapping[str, Any], palette: np.ndarray | str | int,
                    max_frames: int | None = None) -> np.ndarray:
    """One snippet as a titled grid: a row per frame, columns frame | label overlay |
    flow t->t+1 | occlusion t->t+1 (white = occluded).

    The flow/occlusion columns appear when ``flow_fwd`` / ``occ_fwd`` are present; the
    snippet's last frame has no forward flow, so its cells there are blank (grey). Flow
    colours share one scale over the rows shown so they compare across rows.
    """
    frames = np.asarray(example["frames"])
    labels = np.asarray(example["labels"])
    if frames.ndim != 4 or labels.shape != frames.shape[:3]:
        raise ValueError(f"snippet needs frames [T, H, W, 3] and labels [T, H, W]; got "
                         f"{frames.shape} and {labels.shape}")
    t_total, h, w = frames.shape[:3]
    rows = t_total if max_frames is None else max(1, min(int(max_frames), t_total))
    flow = np.asarray(example["flow_fwd"]) if "flow_fwd" in example else None
    occ = np.asarray(example["occ_fwd"]) if "occ_fwd" in example else None
    has_label = np.asarray(example.get("has_label", np.ones(t_total, bool)))
    max_flow = None
    if flow is not None and min(rows, len(flow)) > 0:
        shown = flow[:min(rows, len(flow))]
        mag = np.hypot(shown[..., 0], shown[..., 1])
        mag = mag[np.isfinite(mag) & (mag <= 1e9)]
        max_flow = float(mag.max()) if mag.size and mag.max() > 0 else 1.0
    blank = np.full((h, w, 3), 128, np.uint8)
    images, titles = [], []
    for t in range(rows):
        images += [frames[t], overlay(frames[t], labels[t], palette)]
        titles += [f"frame {t}", f"labels {t}" + ("" if has_label[t] else " (none)")]
        has_next = t < t_total - 1
        if flow is not None:
            images.append(flow_to_color(flow[t], max_flow) if has_next else blank)
            titles.append(f"flow {t}->{t + 1}" if has_next else "")
        if occ is not None:
            images.append((occ[t] > 0).astype(np.uint8) * 255 if has_next else blank)
            titles.append(f"occlusion {t}->{t + 1}" if has_next else "")
    ncols = 2 + (flow is not None) + (occ is not None)
    return make_panel(images, titles, ncols=ncols)
