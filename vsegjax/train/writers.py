"""Metric writers: TensorBoard events (clu) plus a plain-text JSON-lines log."""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from typing import Any, Mapping

import cv2
import jax
import numpy as np
from absl import logging as absl_logging
from clu import metric_writers


class JsonlWriter(metric_writers.interface.MetricWriter):
    """Appends ``{"step": ..., "time": ..., name: value}`` lines to a text file."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._path = path

    def _write(self, step: int, values: Mapping[str, Any]) -> None:
        row = {"step": int(step), "time": time.time()}
        row.update({k: np.asarray(v).item() if np.ndim(v) == 0 else np.asarray(v).tolist()
                    for k, v in values.items()})
        with open(self._path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._write(step, scalars)

    def write_summaries(self, step, values, metadata=None) -> None:
        pass

    def write_images(self, step, images) -> None:
        pass

    def write_videos(self, step, videos) -> None:
        pass

    def write_audios(self, step, audios, *, sample_rate) -> None:
        pass

    def write_texts(self, step, texts) -> None:
        self._write(step, texts)

    def write_histograms(self, step, arrays, num_buckets=None) -> None:
        pass

    def write_hparams(self, hparams) -> None:
        self._write(0, {"hparams": json.dumps(dict(hparams), default=str)})

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def read_jsonl(path: str) -> list[dict]:
    """The rows a ``JsonlWriter`` wrote (for notebooks and tests)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def create_writer(workdir: str, asynchronous: bool = True) -> metric_writers.MetricWriter:
    """TensorBoard + logging + ``metrics.jsonl`` on process 0; nothing elsewhere.

    Asynchronous by default: each writer has a background thread (clu's ``AsyncWriter``,
    order kept), so the step loop does not wait for a file system or a bucket; ``flush``
    waits for everything written so far."""
    if jax.process_index() != 0:
        return metric_writers.MultiWriter([])
    jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
    return metric_writers.MultiWriter([
        metric_writers.create_default_writer(workdir, asynchronous=asynchronous),
        metric_writers.AsyncWriter(jsonl) if asynchronous else jsonl,
    ])


class _DropOrbaxInfo(logging.Filter):
    """Drops orbax's INFO lines (about 40 per checkpoint save, between the progress bar's
    updates); its warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax() -> None:
    """Installs the filter on absl's logger, through which orbax logs (idempotent)."""
    logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _DropOrbaxInfo) for f in logger.filters):
        logger.addFilter(_DropOrbaxInfo())


def flatten_scalars(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested results dict as ``a/b/c`` scalars (None and text left out)."""
    out: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_scalars(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def write_results(workdir: str, step: int, results: Mapping[str, Any]) -> int:
    """A run's results and its PNG panels (``workdir/panels``) as TensorBoard scalars and
    images in ``workdir/eval``, so they sit beside the training curves. Returns the
    number of images written."""
    writer = create_writer(os.path.join(workdir, "eval"))
    writer.write_scalars(step, flatten_scalars(results))
    paths = sorted(glob.glob(os.path.join(workdir, "panels", "*.png")))
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is not None:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            writer.write_images(step, {f"panels/{os.path.basename(path)[:-4]}": rgb[None]})
    writer.flush()
    writer.close()
    return len(paths)
