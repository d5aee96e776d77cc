"""Metric writers: TensorBoard events (clu) plus a plain-text JSON-lines log."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
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


def create_writer(workdir: str) -> metric_writers.MetricWriter:
    """TensorBoard + logging + ``metrics.jsonl`` on process 0; nothing elsewhere."""
    if jax.process_index() != 0:
        return metric_writers.MultiWriter([])
    return metric_writers.MultiWriter([
        metric_writers.create_default_writer(workdir, asynchronous=False),
        JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
    ])
