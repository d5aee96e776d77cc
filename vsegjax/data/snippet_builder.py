"""The base every vsegjax TFDS builder shares, and the helpers they all read files with.

A builder lists its inputs, hands them to ``SnippetBuilder._write`` with a loader, and
gets back the examples in list order (records are never shuffled, so "validation snippet
3" means one thing everywhere). ``_write`` reads on a bounded thread pool (OpenCV
decoding releases the GIL), turns a ``BadExample`` into an error naming the files or,
with ``skip_bad``, into a skip record, and reports what it left out:

    builder.skipped[split] == info.metadata["skipped"][split] ==
        [{"what": "sequence bear frames 0..4", "why": "...truncated JPEG...",
          "files": ["/data/bear/00003.jpg"]}, ...]

Input files are only ever read. TFDS writes into ``*.incomplete*`` folders and renames
them at the end, so an interrupted build never looks complete.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import pathlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

from vsegjax.data import flow_io, image_decode

_Encoding = tfds.features.Encoding
_log = logging.getLogger(__name__)


class BadExample(ValueError):
    """One example cannot be built from its files; the message names them, ``paths``
    lists them."""

    def __init__(self, message: str, paths: Sequence[Any] = ()):
        super().__init__(message)
        self.paths = tuple(str(p) for p in paths)


class MissingExample(BadExample, FileNotFoundError):
    """A file or per-sequence folder that should exist but does not."""


# ----------------------------------------------------------------------------- reading


def check_not_truncated(path: pathlib.Path) -> None:
    """OpenCV decodes a cut-off JPEG as a half-grey picture; catch that by the end marker."""
    size = path.stat().st_size
    if size == 0:
        raise BadExample(f"{path}: empty file", [path])
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, size - 1024))
        tail = f.read()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in tail[-64:]:
        raise BadExample(f"{path}: truncated PNG (no IEND chunk at the end)", [path])
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail:
        raise BadExample(f"{path}: truncated JPEG (no end-of-image marker)", [path])


def read_frame(path: str | os.PathLike, what: str = "image file") -> np.ndarray:
    """A colour frame as uint8 [H, W, 3] RGB; ``MissingExample`` / ``BadExample`` naming
    the file when it is missing, truncated or undecodable."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise MissingExample(f"{path}: {what} is missing", [path])
    check_not_truncated(path)
    try:
        return flow_io.read_image(path)
    except image_decode.CorruptImage as e:
        raise BadExample(str(e), [path]) from e
    except (OSError, ValueError) as e:
        raise BadExample(f"{path}: cannot decode the {what} (corrupt or not an image: {e})",
                         [path]) from e


def resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """``array`` [H, W, ...] at ``size`` (height, width): nearest for labels, area when
    shrinking images (no aliasing), bilinear when enlarging."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if h < array.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(array, (w, h), interpolation=interp)


def _call_catching(fn: Callable, catch: tuple[type[BaseException], ...], item):
    try:
        return fn(item)
    except catch as e:
        return e


def bounded_map(fn: Callable, items: Iterable, workers: int, window: int,
                catch: tuple[type[BaseException], ...] = (BadExample,),
                processes: bool = False) -> Iterator:
    """Ordered map with at most ``window`` items in flight (bounded memory); yields (item,
    result or the ``catch`` error it raised). ``workers <= 1`` is a lazy serial map (each
    item is read right after it is drawn). ``processes`` uses spawned processes (for pure
    Python work; ``fn`` must pickle) instead of threads."""
    call = functools.partial(_call_catching, fn, catch)
    if workers <= 1:
        for item in items:
            yield item, call(item)
        return
    if processes:
        # "spawn": the parent may already hold JAX/TF threads, which fork does not survive.
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"))
    else:
        pool = concurrent.futures.ThreadPoolExecutor(workers)
    with pool:
        pending = collections.deque()
        for item in items:
            pending.append((item, pool.submit(call, item)))
            if len(pending) >= window:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()


def format_report(name: str, skipped: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """What ``skip_bad`` skipped: the count, then per split one line per skip record."""
    total = sum(len(v) for v in skipped.values())
    lines = [f"{name}: skipped {total} bad example(s)"]
    for split, records in skipped.items():
        if records:
            lines.append(f"  {split}: {len(records)} skipped")
            lines.extend(f"    {r['what']}: {r['why']}" for r in records)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- features


def snippet_features(num_frames: int | None, size: tuple[int, int] | None = None, *,
                     frame_index: bool = True, flow: Sequence[str] = (),
                     extra: Mapping[str, Any] | None = None) -> tfds.features.FeaturesDict:
    """The ``features.py`` snippet keys; ``size`` None stores H, W per record. ``flow``
    names the extra ground truth: "fwd" / "bwd" (flow_* and occ_*), "valid" (flow_valid
    and has_flow), "degraded"."""
    t = num_frames
    h, w = size if size is not None else (None, None)
    p = None if t is None else t - 1

    def tensor(shape, dtype, encoding=_Encoding.BYTES):
        return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=encoding)

    spec = {
        "frames": tensor((t, h, w, 3), np.uint8),
        "labels": tensor((t, h, w), np.uint8, _Encoding.ZLIB),
        "has_label": tensor((t,), np.bool_),
        "label_index": tfds.features.Scalar(np.int32),
        "snippet_id": tfds.features.Scalar(np.int64),
    }
    if frame_index:
        spec["frame_index"] = tfds.features.Scalar(np.int64)
    for direction in ("fwd", "bwd"):
        if direction in flow:
            spec[f"flow_{direction}"] = tensor((p, h, w, 2), np.float32, _Encoding.ZLIB)
            spec[f"occ_{direction}"] = tensor((p, h, w), np.uint8, _Encoding.ZLIB)
    if "valid" in flow:
        spec["flow_valid"] = tensor((p, h, w), np.uint8, _Encoding.ZLIB)
        spec["has_flow"] = tensor((p,), np.bool_)
    if "degraded" in flow:
        spec["degraded"] = tensor((t,), np.uint8)
    spec.update(extra or {})
    return tfds.features.FeaturesDict(spec)


# ----------------------------------------------------------------------------- builder


def _print(message: str) -> None:
    print(message, flush=True)


class SnippetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """ArrayRecord snippets in list order, ``skip_bad``, progress and skip reports."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    EXPECTED = ""  # the manual folder's layout, quoted when nothing is found there

    def __init__(self, *, skip_bad: bool | None = None, num_workers: int | None = None,
                 progress: Callable[[str], None] | None = None, **kwargs):
        super().__init__(file_format="array_record", **kwargs)
        if self.builder_config is None:
            raise ValueError(f"{type(self).__name__} needs a config")
        if skip_bad is None:
            skip_bad = getattr(self.builder_config, "skip_bad", False)
        self.skip_bad = bool(skip_bad)
        self.num_workers = (num_workers if num_workers is not None
                            else min(8, os.cpu_count() or 1))
        self.progress = progress or _print
        # split -> skip records of the last build (see the module docstring).
        self.skipped: dict[str, list[dict[str, Any]]] = {}

    @property
    def title(self) -> str:
        return f"{self.name}/{self.builder_config.name}"

    def report(self) -> str:
        """What the last build skipped, one line per skip record."""
        return format_report(self.title, self.skipped)

    def _manual_root(self, dl_manager) -> pathlib.Path:
        """The manual folder, and a fresh skip record for this build."""
        try:
            root = pathlib.Path(dl_manager.manual_dir)
        except AssertionError as e:  # TFDS: "Manual directory ... does not exist or is empty"
            raise FileNotFoundError(f"{self.name}: manual dir missing or empty: {e}") from e
        self._start()
        return root

    def _start(self) -> None:
        self.skipped = {}
        self.info.metadata["skipped"] = {}

    def _skip(self, split: str, what: str, error: Exception) -> None:
        """Raises ``error`` unless ``skip_bad``; then records it as a skip."""
        if not self.skip_bad:
            error.add_note("(build with skip_bad=True / --skip_bad to skip bad examples)")
            raise error
        _log.warning("%s %s: skipping %s: %s", self.title, split, what, error)
        self.skipped.setdefault(split, []).append(
            {"what": what, "why": str(error), "files": list(getattr(error, "paths", ()))})

    def _write(self, split: str, items: Iterable, load: Callable[[Any], dict], *,
               what: Callable[[Any], str], workers: int | None = None,
               window: int | None = None) -> Iterator[tuple[Any, dict]]:
        """Yields (item, example) for each item ``load`` can read, in order; reports the
        skipped ones at the end and refuses a split with nothing written."""
        workers = self.num_workers if workers is None else workers
        window = window or 4 * max(1, workers)
        written = 0
        for item, result in bounded_map(load, items, workers, window,
                                        catch=(BadExample, FileNotFoundError)):
            if isinstance(result, Exception):
                self._skip(split, what(item), result)
                continue
            written += 1
            if written % 100 == 0:
                self.progress(f"{self.title} {split}: {written} snippets")
            yield item, result
        records = self.skipped.get(split, [])
        self.info.metadata.setdefault("skipped", {})[split] = records
        if records:
            self.progress(format_report(self.title, {split: records}))
        if not written:
            raise BadExample(f"{self.title} split {split!r}: no snippet could be written"
                             + (f" ({len(records)} bad)" if records else ""))
        self.progress(f"{self.title} {split}: {written} snippets written")


def prepare(builder: SnippetBuilder, manual_dir: str | os.PathLike | None) -> SnippetBuilder:
    """Builds ``builder`` from the raw folder ``manual_dir`` unless already built."""
    if builder.is_prepared():
        return builder
    download_config = None
    if manual_dir is not None:
        manual = pathlib.Path(os.path.expanduser(os.fspath(manual_dir)))
        if not manual.is_dir() or not any(manual.iterdir()):
            state = ("does not exist" if not manual.exists() else
                     "is not a folder" if not manual.is_dir() else "is empty")
            raise FileNotFoundError(f"{builder.name}: manual dir missing or empty: {manual} "
                                    f"{state}; {builder.EXPECTED}")
        download_config = tfds.download.DownloadConfig(manual_dir=str(manual))
    builder.download_and_prepare(download_config=download_config)
    return builder
