"""Reading and writing optical flow (Middlebury ``.flo``), images and label masks.

``.flo`` layout (little-endian): float32 magic 202021.25, int32 width, int32 height,
then H*W interleaved (u, v) float32 pairs in row-major order; u = x (horizontal),
v = y (vertical) displacement in pixels, matching the vsegjax flow convention.
Every error names the offending file (DESIGN.md: fail loudly).
"""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

from vsegjax import files
from vsegjax.data import image_decode

PathLike = str | os.PathLike

FLO_MAGIC = np.float32(202021.25)
_HEADER_BYTES = 12
# Real flow fields are at most a few thousand pixels a side; a larger header almost
# always means a corrupt or non-.flo file, and would otherwise trigger a huge allocation.
MAX_FLO_DIM = 100_000


def read_flo(path: PathLike) -> np.ndarray:
    """Reads a Middlebury ``.flo`` file into a float32 [H, W, 2] array (x, y)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"flow file not found: {path}")
    data = path.read_bytes()
    if len(data) < _HEADER_BYTES:
        raise ValueError(f"{path}: truncated .flo file ({len(data)} bytes, header needs "
                         f"{_HEADER_BYTES})")
    magic = np.frombuffer(data, dtype="<f4", count=1, offset=0)[0]
    if magic != FLO_MAGIC:
        raise ValueError(f"{path}: not a .flo file (magic {float(magic)!r}, expected "
                         f"{float(FLO_MAGIC)})")
    width, height = (int(v) for v in np.frombuffer(data, dtype="<i4", count=2, offset=4))
    if not (0 < width <= MAX_FLO_DIM and 0 < height <= MAX_FLO_DIM):
        raise ValueError(f"{path}: implausible .flo dimensions width={width}, height={height}")
    expected = _HEADER_BYTES + width * height * 2 * 4
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{path}: .flo file {what}: {len(data)} bytes, header "
                         f"{width}x{height} needs {expected}")
    flow = np.frombuffer(data, dtype="<f4", offset=_HEADER_BYTES).reshape(height, width, 2)
    # Copy into native-endian, writable memory (frombuffer views are read-only).
    return flow.astype(np.float32, copy=True)


def write_flo(path: PathLike, flow: np.ndarray) -> None:
    """Writes a [H, W, 2] flow (x, y) as a Middlebury ``.flo`` file, atomically."""
    path = pathlib.Path(path)
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[-1] != 2 or flow.shape[0] == 0 or flow.shape[1] == 0:
        raise ValueError(f"{path}: flow to write must have shape [H, W, 2]; got {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating) and not np.issubdtype(flow.dtype, np.integer):
        raise ValueError(f"{path}: flow to write must be numeric; got dtype {flow.dtype}")
    height, width = flow.shape[:2]
    header = (np.array([FLO_MAGIC], dtype="<f4").tobytes()
              + np.array([width, height], dtype="<i4").tobytes())
    body = np.ascontiguousarray(flow, dtype="<f4").tobytes()
    files.atomic_write_bytes(path, header + body)


def read_image(path: PathLike) -> np.ndarray:
    """Reads a colour image (PNG, JPEG, PPM, ...) as uint8 [H, W, 3] RGB."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    # Through image_decode, so a JPEG libjpeg calls corrupt is an error, not a grey frame.
    image = image_decode.decode(path.read_bytes(), cv2.IMREAD_COLOR, str(path))
    if image is None:
        raise ValueError(f"{path}: OpenCV could not decode the image (corrupt or unsupported)")
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got {image.dtype}")
    # OpenCV decodes to BGR; everything in vsegjax is RGB.
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: PathLike) -> np.ndarray:
    """Reads a single-channel label/mask PNG as uint8 [H, W] (values kept as stored)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    # IMREAD_UNCHANGED keeps palette indices / raw values; IMREAD_GRAYSCALE would
    # convert a colour file by luminance and silently scramble class ids.
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError(f"{path}: OpenCV could not decode the mask (corrupt or unsupported)")
    if mask.ndim == 3:
        if mask.shape[-1] in (3, 4) and all(
                np.array_equal(mask[..., 0], mask[..., c]) for c in (1, 2)):
            mask = mask[..., 0]  # grey stored as RGB(A): all colour channels equal
        else:
            raise ValueError(f"{path}: expected a single-channel mask, got shape {mask.shape}")
    if mask.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit mask, got {mask.dtype}")
    return mask
