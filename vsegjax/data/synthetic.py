"""Procedural street-like video snippets with exact labels, flow and occlusion.

A snippet is a stack of layers drawn back to front: sky, buildings, vegetation, sidewalk
and road (scene layers that move with the camera at their own depth, so they occlude each
other by parallax), then moving objects (cars, people, bicycles, poles with signs) with
their own translation, rotation and scale. Each layer is a texture plus a binary mask in
its own coordinates and a 3x3 matrix per frame mapping layer to image coordinates, so the
flow of a pixel is exact: ``p' = A_{t+1} A_t^{-1} p`` for the layer visible at ``p``, and
it is occluded in the next frame when another layer is on top at ``p'`` or ``p'`` leaves
the image. Degradations (noise, blur, flicker, lens occluders, texture dropout) hit some
frames only, after the exact quantities are computed, so temporal context can undo them.

Output follows ``vsegjax.data.features``. Everything is a function of (config, split,
index): snippets are independent and deterministic, so they can be made in parallel.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import cv2
import numpy as np

from vsegjax.data.features import IGNORE_LABEL

# The class catalogue; a config may use any subset (missing scene classes become 255).
CLASSES: tuple[str, ...] = ("road", "sidewalk", "building", "vegetation", "sky", "car",
                            "person", "bicycle", "pole", "sign")
_CID = {name: i for i, name in enumerate(CLASSES)}
SCENE_CLASSES = ("sky", "building", "vegetation", "sidewalk", "road")
OBJECT_CLASSES = ("car", "person", "bicycle", "pole")  # a pole carries a sign when "sign" is used

# Degradation bits stored per frame in the "degraded" feature.
NOISE, BLUR, FLICKER, OCCLUDER, DROPOUT = 1, 2, 4, 8, 16
DEGRADATIONS = {"noise": NOISE, "blur": BLUR, "flicker": FLICKER, "occluder": OCCLUDER,
                "dropout": DROPOUT}
_SPLIT_SEED = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What a synthetic snippet looks like. Sizes are in pixels, speeds in pixels/frame."""
    height: int = 128
    width: int = 256
    num_frames: int = 7
    label_index: int = 4  # the "annotated" frame; every frame is labelled anyway
    classes: tuple[str, ...] = CLASSES
    num_objects: tuple[int, int] = (4, 8)  # inclusive range per snippet
    camera_speed: float = 3.0  # max pan speed at depth 1
    object_speed: float = 5.0
    degrade_prob: float = 0.35  # chance that a frame is degraded
    seed: int = 0

    def __post_init__(self):
        if self.height < 16 or self.width < 16:
            raise ValueError(f"height and width must be >= 16; got {self.height}x{self.width}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (flow needs pairs); got {self.num_frames}")
        if not 0 <= self.label_index < self.num_frames:
            raise ValueError(f"label_index {self.label_index} outside [0, {self.num_frames})")
        unknown = [c for c in self.classes if c not in _CID]
        if unknown or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names from {CLASSES}; got {self.classes}")
        if not 0.0 <= self.degrade_prob <= 1.0:
            raise ValueError(f"degrade_prob must be in [0, 1]; got {self.degrade_prob}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def label_lut(self) -> np.ndarray:
        """Catalogue id -> training id (255 for classes the config leaves out)."""
        lut = np.full(len(CLASSES), IGNORE_LABEL, np.uint8)
        for i, name in enumerate(self.classes):
            lut[_CID[name]] = i
        return lut


@dataclasses.dataclass
class Layer:
    texture: np.ndarray  # float32 [h, w, 3] in [0, 1]
    mask: np.ndarray  # bool [h, w]
    class_id: int  # catalogue id
    mats: np.ndarray  # float64 [T, 3, 3], layer (u, v, 1) -> image (x, y, 1)
    wrap: bool = False  # texture and mask tile horizontally (scene layers)


# ----------------------------------------------------------------------------- textures
def _noise(rng: np.random.Generator, h: int, w: int, cell: float, channels: int = 1) -> np.ndarray:
    """Smooth noise in [-1, 1] with features about ``cell`` pixels wide."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.uniform(-1, 1, (gh, gw, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(h, w, channels), -1, 1)


def _textured(rng, h, w, base, var=0.08, cell=6.0, fine=0.04) -> np.ndarray:
    base = np.asarray(base, np.float32) + rng.uniform(-var, var, 3).astype(np.float32)
    tex = base + 0.10 * _noise(rng, h, w, cell, 1) + fine * _noise(rng, h, w, 1.5, 3)
    return np.clip(tex, 0, 1).astype(np.float32)


def _camera(cfg: SyntheticConfig, rng: np.random.Generator) -> dict:
    return dict(vx=rng.uniform(-1, 1) * cfg.camera_speed,
                vy=rng.uniform(-0.3, 0.3) * cfg.camera_speed * 0.2,
                zoom=rng.uniform(-0.01, 0.025))


def _camera_mats(cfg: SyntheticConfig, cam: dict, depth: float) -> np.ndarray:
    """Per-frame matrices of a point at ``depth`` (1 = ground plane, near 0 = far away)."""
    cx, cy = cfg.width / 2.0, cfg.height / 2.0
    mats = []
    for t in range(cfg.num_frames):
        s = (1.0 + cam["zoom"] * depth) ** t
        tx, ty = -cam["vx"] * depth * t, -cam["vy"] * depth * t
        mats.append(np.array([[s, 0, cx - s * cx + s * tx], [0, s, cy - s * cy + s * ty],
                              [0, 0, 1]], np.float64))
    return np.stack(mats)


# ----------------------------------------------------------------------------- scene layers
def _scene_layers(cfg: SyntheticConfig, rng: np.random.Generator, cam: dict,
                  horizon: int) -> list[Layer]:
    h, w = cfg.height, cfg.width
    tw = 2 * w  # wider than the image so panning reveals new content
    yy, xx = np.mgrid[0:h, 0:tw]
    layers = []

    sky = _textured(rng, h, tw, (0.55, 0.70, 0.90), cell=30)
    clouds = np.clip(_noise(rng, h, tw, 25)[..., 0], 0, 1)[..., None]
    sky = np.clip(sky * (1 - 0.6 * clouds) + 0.6 * clouds, 0, 1)
    layers.append(Layer(sky, np.ones((h, tw), bool), _CID["sky"], _camera_mats(cfg, cam, 0.1),
                        wrap=True))

    tex = np.zeros((h, tw, 3), np.float32)
    mask = np.zeros((h, tw), bool)
    x = 0
    while x < tw:
        bw = int(rng.integers(w // 10, w // 4))
        top = int(horizon - rng.uniform(0.15, 0.45) * h)
        x1 = min(tw, x + bw)
        mask[top:horizon + 4, x:x1] = True
        facade = _textured(rng, h, x1 - x, rng.uniform(0.3, 0.75, 3) * [1.0, 0.9, 0.8], cell=8)
        # A grid of windows: the classic cue for "building".
        wy, wx = int(rng.integers(6, 11)), int(rng.integers(6, 12))
        win = ((np.arange(h)[:, None] - top) % wy < wy // 2) & ((np.arange(x1 - x)[None] % wx) < wx // 2)
        facade[win] *= rng.uniform(0.3, 0.6)
        tex[:, x:x1] = facade
        x = x1 + int(rng.integers(0, w // 12))
    layers.append(Layer(tex, mask, _CID["building"], _camera_mats(cfg, cam, 0.5), wrap=True))

    veg = _textured(rng, h, tw, (0.22, 0.45, 0.15), cell=3, fine=0.08)
    vmask = np.zeros((h, tw), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        center = (int(rng.integers(0, tw)), int(horizon - rng.uniform(0.0, 0.2) * h))
        axes = (int(rng.integers(w // 20, w // 8)), int(rng.integers(h // 10, h // 4)))
        cv2.ellipse(vmask, center, axes, 0, 0, 360, 1, -1)
    layers.append(Layer(veg, vmask.astype(bool), _CID["vegetation"], _camera_mats(cfg, cam, 0.7),
                        wrap=True))

    walk_end = horizon + int(rng.uniform(0.08, 0.16) * h)
    side = _textured(rng, h, tw, (0.62, 0.56, 0.50), cell=10)
    tiles = ((yy % 8) == 0) | ((xx % 12) == 0)
    side[tiles] *= 0.8
    layers.append(Layer(side, (yy >= horizon) & (yy < walk_end), _CID["sidewalk"],
                        _camera_mats(cfg, cam, 1.0), wrap=True))

    road = _textured(rng, h, tw, (0.33, 0.33, 0.35), var=0.03, cell=12, fine=0.05)
    lane_y = (walk_end + h) // 2
    dashes = (np.abs(yy - lane_y) <= 1) & ((xx % 40) < 20)
    road[dashes] = (0.92, 0.92, 0.88)
    layers.append(Layer(road, yy >= walk_end, _CID["road"], _camera_mats(cfg, cam, 1.0), wrap=True))
    return layers


# ----------------------------------------------------------------------------- objects
def _object_shape(kind: str, rng: np.random.Generator, scale: float):
    """Texture and mask of one object on a canvas with margin (so rotation never clips)."""
    if kind == "car":
        ow, oh = int(46 * scale), int(20 * scale)
    elif kind == "person":
        ow, oh = int(10 * scale), int(28 * scale)
    elif kind == "bicycle":
        ow, oh = int(26 * scale), int(16 * scale)
    else:  # pole
        ow, oh = max(2, int(3 * scale)), int(52 * scale)
    side = int(np.ceil(np.hypot(ow, oh))) + 4
    canvas = np.zeros((side, side), np.uint8)
    c = side // 2
    x0, y0, x1, y1 = c - ow // 2, c - oh // 2, c + (ow + 1) // 2, c + (oh + 1) // 2
    if kind == "car":
        tex = _textured(rng, side, side, rng.uniform(0.1, 0.9, 3), var=0.0, cell=20, fine=0.02)
        cv2.rectangle(canvas, (x0, y0 + oh // 3), (x1, y1), 1, -1)
        cv2.rectangle(canvas, (x0 + ow // 5, y0), (x1 - ow // 5, y0 + oh // 3), 1, -1)
        tex[y0 + 2:y0 + oh // 3, x0 + ow // 5 + 2:x1 - ow // 5 - 2] = (0.15, 0.18, 0.22)
        for wx in (x0 + ow // 5, x1 - ow // 5):
            cv2.circle(tex, (wx, y1 - 1), max(2, oh // 5), (0.05, 0.05, 0.05), -1)
    elif kind == "person":
        tex = _textured(rng, side, side, rng.uniform(0.1, 0.8, 3), cell=4)
        head = max(2, ow // 2)
        cv2.circle(canvas, (c, y0 + head), head, 1, -1)
        cv2.rectangle(canvas, (x0, y0 + 2 * head), (x1, y1), 1, -1)
        cv2.circle(tex, (c, y0 + head), head, (0.85, 0.65, 0.5), -1)
    elif kind == "bicycle":
        tex = _textured(rng, side, side, (0.12, 0.12, 0.14), var=0.05, cell=3)
        r = max(2, oh // 3)
        for wx in (x0 + r, x1 - r):
            cv2.circle(canvas, (wx, y1 - r), r, 1, max(1, int(2 * scale)))
        cv2.line(canvas, (x0 + r, y1 - r), (c, y0 + 2), 1, max(1, int(2 * scale)))
        cv2.line(canvas, (c, y0 + 2), (x1 - r, y1 - r), 1, max(1, int(2 * scale)))
        cv2.line(canvas, (x0 + r, y1 - r), (x1 - r, y1 - r), 1, max(1, int(2 * scale)))
    else:
        tex = _textured(rng, side, side, (0.5, 0.5, 0.52), var=0.1, cell=6)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1), 1, -1)
    return tex, canvas.astype(bool), (oh, side)


def _object_mats(cfg, cam, rng, pos, vel, spin, grow, side) -> np.ndarray:
    cam_mats = _camera_mats(cfg, cam, 1.0)
    angle0 = rng.uniform(-0.15, 0.15)
    mats = []
    for t in range(cfg.num_frames):
        a, s = angle0 + spin * t, (1.0 + grow) ** t
        rot = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0],
                        [0, 0, 1]])
        move = np.array([[1, 0, pos[0] + vel[0] * t], [0, 1, pos[1] + vel[1] * t], [0, 0, 1]])
        center = np.array([[1, 0, -side / 2.0], [0, 1, -side / 2.0], [0, 0, 1]])
        mats.append(cam_mats[t] @ move @ rot @ center)
    return np.stack(mats)


def _object_layers(cfg: SyntheticConfig, rng: np.random.Generator, cam: dict,
                   horizon: int) -> list[Layer]:
    kinds = [k for k in OBJECT_CLASSES if k in cfg.classes]
    if not kinds:
        return []
    h, w = cfg.height, cfg.width
    placed = []  # (foot, layers): objects lower in the image are nearer and drawn later
    for _ in range(int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))):
        kind = kinds[int(rng.integers(len(kinds)))]
        foot = rng.uniform(horizon + 0.1 * h, h + 0.1 * h)  # lower in the image = nearer
        scale = (0.6 + 1.2 * (foot - horizon) / max(1.0, h - horizon)) * h / 128.0
        tex, mask, (oh, side) = _object_shape(kind, rng, scale)
        speed = 0.0 if kind == "pole" else cfg.object_speed * rng.uniform(0.2, 1.0)
        speed *= {"person": 0.4, "bicycle": 0.7}.get(kind, 1.0)
        direction = rng.choice([-1.0, 1.0])
        # Start some objects outside the frame so they enter, others near an edge so they leave.
        x = rng.uniform(-0.15 * w, 1.15 * w)
        pos = (x, foot - oh / 2.0)
        vel = (direction * speed, rng.uniform(-0.15, 0.15) * speed)
        spin = 0.0 if kind == "pole" else rng.uniform(-0.02, 0.02)
        grow = 0.0 if kind == "pole" else rng.uniform(-0.02, 0.03)
        mats = _object_mats(cfg, cam, rng, pos, vel, spin, grow, side)
        layers = [Layer(tex, mask, _CID[kind], mats)]
        if kind == "pole" and "sign" in cfg.classes:
            r = max(3, int(6 * scale))
            sign_side = 2 * r + 4
            stex = np.zeros((sign_side, sign_side, 3), np.float32)
            stex[:] = [(0.8, 0.1, 0.1), (0.1, 0.3, 0.8), (0.9, 0.8, 0.1)][int(rng.integers(3))]
            smask = np.zeros((sign_side, sign_side), np.uint8)
            cv2.circle(smask, (sign_side // 2, sign_side // 2), r, 1, -1)
            cv2.circle(stex, (sign_side // 2, sign_side // 2), max(1, r // 2), (0.95, 0.95, 0.95), -1)
            # The sign rides on top of the pole: same motion, offset to the pole's top.
            offset = np.array([[1, 0, side / 2.0 - sign_side / 2.0],
                               [0, 1, side / 2.0 - oh / 2.0 - sign_side / 2.0 + 2], [0, 0, 1]])
            layers.append(Layer(stex, smask.astype(bool), _CID["sign"], mats @ offset))
        placed.append((foot, layers))
    placed.sort(key=lambda item: item[0])
    return [layer for _, layers in placed for layer in layers]


# ----------------------------------------------------------------------------- rendering
def _layer_coords(layer: Layer, t: int, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inv = np.linalg.inv(layer.mats[t])
    x, y = pts[..., 0], pts[..., 1]
    return inv[0, 0] * x + inv[0, 1] * y + inv[0, 2], inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]


def _covers(layer: Layer, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether the layer's mask covers layer coords (u, v), nearest sample."""
    th, tw = layer.mask.shape
    ui = np.floor(u + 0.5).astype(np.int64)
    vi = np.floor(v + 0.5).astype(np.int64)
    if layer.wrap:
        # Scene layers tile horizontally and extend their top and bottom rows vertically,
        # so every pixel is covered however the camera zooms or pans.
        ui %= tw
        vi = np.clip(vi, 0, th - 1)
    inside = (ui >= 0) & (ui < tw) & (vi >= 0) & (vi < th)
    out = np.zeros(u.shape, bool)
    out[inside] = layer.mask[vi[inside], ui[inside]]
    return out


def topmost_layer(layers: Sequence[Layer], t: int, pts: np.ndarray) -> np.ndarray:
    """Index of the front-most layer covering each point ``pts`` [..., 2] of frame t (-1: none)."""
    top = np.full(pts.shape[:-1], -1, np.int32)
    for k, layer in enumerate(layers):
        top[_covers(layer, *_layer_coords(layer, t, pts))] = k
    return top


def _render(layers: Sequence[Layer], t: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(layer index [H, W], colour float32 [H, W, 3]) of frame t."""
    top = np.full(grid.shape[:-1], -1, np.int32)
    color = np.zeros(grid.shape[:-1] + (3,), np.float32)
    for k, layer in enumerate(layers):
        u, v = _layer_coords(layer, t, grid)
        cov = _covers(layer, u, v)
        if not cov.any():
            continue
        border = cv2.BORDER_WRAP if layer.wrap else cv2.BORDER_REPLICATE
        if layer.wrap:
            v = np.clip(v, 0, layer.texture.shape[0] - 1)
        tex = cv2.remap(layer.texture, u.astype(np.float32), v.astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=border)
        top[cov] = k
        color[cov] = tex[cov]
    return top, color


def _flow_and_occlusion(layers, top_src, t_src, t_dst, grid, height, width):
    """Exact flow from frame t_src to t_dst for every pixel of t_src, and its occlusion."""
    mats = np.stack([layer.mats[t_dst] @ np.linalg.inv(layer.mats[t_src]) for layer in layers])
    m = mats[np.maximum(top_src, 0)]  # [H, W, 3, 3]
    x, y = grid[..., 0], grid[..., 1]
    tx = m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2]
    ty = m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]
    target = np.stack([tx, ty], -1)
    outside = (tx < 0) | (tx > width - 1) | (ty < 0) | (ty > height - 1)
    hidden = topmost_layer(layers, t_dst, target) != top_src
    return (target - grid).astype(np.float32), (outside | hidden).astype(np.uint8)


# ----------------------------------------------------------------------------- degradations
def _degrade(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One or two random degradations of a float [H, W, 3] frame; returns (image, bits)."""
    h, w = img.shape[:2]
    kinds = rng.choice(list(DEGRADATIONS), size=int(rng.integers(1, 3)), replace=False)
    bits = 0
    for kind in kinds:
        bits |= DEGRADATIONS[kind]
        if kind == "noise":
            img = img + rng.normal(0, rng.uniform(0.06, 0.15), img.shape).astype(np.float32)
        elif kind == "blur":
            k = int(rng.choice([5, 7, 9]))
            img = cv2.GaussianBlur(img, (k, k), 0)
        elif kind == "flicker":
            img = img * rng.uniform(0.45, 1.6) + rng.uniform(-0.1, 0.1)
        elif kind == "occluder":
            # A smudge on the lens: hides what is behind it, the label stays the scene's.
            mask = np.zeros((h, w), np.uint8)
            pts = rng.uniform([0, 0], [w, h], (int(rng.integers(4, 8)), 2))
            center = pts.mean(0)
            pts = center + (pts - center) * rng.uniform(0.3, 0.6)
            cv2.fillPoly(mask, [cv2.convexHull(pts.astype(np.int32))], 1)
            shade = rng.uniform(0.1, 0.5) + 0.05 * _noise(rng, h, w, 6)
            img = np.where(mask[..., None] > 0, shade, img)
        else:  # dropout: flatten the texture of a region to its mean colour
            y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            y1, x1 = y0 + int(rng.integers(h // 4, h // 2)), x0 + int(rng.integers(w // 4, w // 2))
            region = img[y0:y1, x0:x1]
            img = img.copy()
            img[y0:y1, x0:x1] = 0.3 * region + 0.7 * region.mean(axis=(0, 1))
    return np.clip(img, 0, 1).astype(np.float32), bits


# ----------------------------------------------------------------------------- snippets
def snippet_rng(cfg: SyntheticConfig, split: str, index: int) -> np.random.Generator:
    if split not in _SPLIT_SEED:
        raise ValueError(f"split must be one of {sorted(_SPLIT_SEED)}; got {split!r}")
    return np.random.default_rng([cfg.seed, _SPLIT_SEED[split], index])


def make_layers(cfg: SyntheticConfig, rng: np.random.Generator) -> list[Layer]:
    """The layers of one snippet, back to front (scene layers first, then objects)."""
    cam = _camera(cfg, rng)
    horizon = int(rng.uniform(0.38, 0.55) * cfg.height)
    return _scene_layers(cfg, rng, cam, horizon) + _object_layers(cfg, rng, cam, horizon)


def generate_snippet(cfg: SyntheticConfig, split: str, index: int, *,
                     return_clean: bool = False) -> dict[str, np.ndarray]:
    """Renders snippet ``index`` of ``split``; the same arguments always give the same arrays.

    With ``return_clean`` the dict also holds ``clean_frames``: the frames before
    degradation, for which the flow is exact up to texture interpolation.
    """
    rng = snippet_rng(cfg, split, index)
    h, w, t_len = cfg.height, cfg.width, cfg.num_frames
    layers = make_layers(cfg, rng)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    grid = np.stack([xs, ys], -1)

    tops, clean = zip(*[_render(layers, t, grid) for t in range(t_len)])
    assert min(int(top.min()) for top in tops) >= 0, "the sky layer must cover every pixel"
    class_of_layer = np.array([layer.class_id for layer in layers])
    labels = np.stack([cfg.label_lut()[class_of_layer[top]] for top in tops])

    flow_fwd, occ_fwd, flow_bwd, occ_bwd = [], [], [], []
    for t in range(t_len - 1):
        f, o = _flow_and_occlusion(layers, tops[t], t, t + 1, grid, h, w)
        flow_fwd.append(f)
        occ_fwd.append(o)
        f, o = _flow_and_occlusion(layers, tops[t + 1], t + 1, t, grid, h, w)
        flow_bwd.append(f)
        occ_bwd.append(o)

    frames, degraded = [], []
    for img in clean:
        bits = 0
        if rng.uniform() < cfg.degrade_prob:
            img, bits = _degrade(img, rng)
        frames.append(img)
        degraded.append(bits)

    def to_uint8(x):
        return np.round(np.clip(np.stack(x), 0, 1) * 255).astype(np.uint8)

    out = {
        "frames": to_uint8(frames),
        "labels": labels.astype(np.uint8),
        "has_label": np.ones(t_len, bool),
        "label_index": np.int32(cfg.label_index),
        "flow_fwd": np.stack(flow_fwd),
        "flow_bwd": np.stack(flow_bwd),
        "occ_fwd": np.stack(occ_fwd),
        "occ_bwd": np.stack(occ_bwd),
        "degraded": np.asarray(degraded, np.uint8),
        "snippet_id": np.int64(index),
    }
    if return_clean:
        out["clean_frames"] = to_uint8(clean)
    return out
