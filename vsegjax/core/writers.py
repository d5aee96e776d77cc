"""Metric writers: TensorBoard events, a plain-text JSON-lines log and the log itself,
written off the step loop, on a local disk or a bucket, without TensorFlow.

``create_writer`` is what the trainer uses; the classes follow the method names of clu's
``MetricWriter`` (``write_scalars``, ``write_images``, ...) so code written against one reads
the same with the other. clu's own writers are not used because importing
``clu.metric_writers`` imports TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import time
from typing import Any, Mapping, Sequence

import cv2
import jax
import numpy as np
from absl import logging as absl_logging
from etils import epath

from vsegjax import files
from vsegjax.core import events
class MetricWriter:
    """The writer interface; every method is a no-op unless a subclass writes that kind."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        pass

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        pass

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        pass

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.flush()


class JsonlWriter(MetricWriter):
    """``{"step": ..., "time": ..., name: value}`` lines in a text file. Locally each row
    is appended; a bucket object cannot be appended to, so there the rows are kept and the
    whole file is uploaded again on each ``flush`` (a run logs a few thousand rows at most)."""

    def __init__(self, path: str):
        self._path = path
        self._local = files.is_local(path)
        self._rows: list[str] | None = None  # a bucket file's lines, read on first write

    def _write(self, step: int, values: Mapping[str, Any]) -> None:
        row = {"step": int(step), "time": time.time()}
        row.update({k: np.asarray(v).item() if np.ndim(v) == 0 else np.asarray(v).tolist()
                    for k, v in values.items()})
        line = json.dumps(row) + "\n"
        if self._local:
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
            with open(self._path, "a") as f:
                f.write(line)
            return
        if self._rows is None:
            path = epath.Path(self._path)
            self._rows = path.read_text().splitlines(keepends=True) if path.exists() else []
        self._rows.append(line)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._write(step, scalars)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        self._write(step, texts)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._write(0, {"hparams": json.dumps(dict(hparams), default=str)})

    def flush(self) -> None:
        if self._rows is not None:
            files.atomic_write_text(self._path, "".join(self._rows), all_processes=True)


class LoggingWriter(MetricWriter):
    """Scalars as one INFO line per step (``[step] name=value, ...``)."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        text = ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(scalars.items()))
        absl_logging.info("[%d] %s", step, text)


class MultiWriter(MetricWriter):
    """Hands every call to each of ``writers``."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self._writers = list(writers)

    def _each(name):
        def method(self, *args, **kwargs):
            for w in self._writers:
                getattr(w, name)(*args, **kwargs)
        method.__name__ = name
        return method

    write_scalars = _each("write_scalars")
    write_images = _each("write_images")
    write_texts = _each("write_texts")
    write_hparams = _each("write_hparams")
    flush = _each("flush")
    close = _each("close")
    del _each


class AsyncWriter(MetricWriter):
    """Runs ``writer``'s calls on one background thread, in order, so the step loop never
    waits for a disk or a bucket. ``flush`` waits for everything written so far and
    raises the first error a write met."""

    def __init__(self, writer: MetricWriter):
        self._writer = writer
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metrics")
        self._pending: list[concurrent.futures.Future] = []

    def _submit(self, name: str, *args) -> None:
        self._pending = [f for f in self._pending if not f.done() or f.exception()]
        self._pending.append(self._pool.submit(getattr(self._writer, name), *args))

    def write_scalars(self, step, scalars):
        self._submit("write_scalars", step, dict(scalars))

    def write_images(self, step, images):
        self._submit("write_images", step, dict(images))

    def write_texts(self, step, texts):
        self._submit("write_texts", step, dict(texts))

    def write_hparams(self, hparams):
        self._submit("write_hparams", dict(hparams))

    def flush(self) -> None:
        self._submit("flush")
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.flush()
            self._pool.submit(self._writer.close).result()
        finally:
            self._pool.shutdown(wait=True)


class ProgressReport:
    """Every ``every_secs``: ``steps_per_sec`` to the writer and a log line with the ETA."""

    def __init__(self, num_steps: int, writer: MetricWriter, every_secs: float = 30.0):
        self._num_steps, self._writer, self._every = num_steps, writer, every_secs
        self._last: tuple[int, float] | None = None

    def __call__(self, step: int) -> None:
        now = time.monotonic()
        if self._last is None:
            self._last = (step, now)
            return
        last_step, last_time = self._last
        if now - last_time < self._every or step <= last_step:
            return
        rate = (step - last_step) / (now - last_time)
        self._writer.write_scalars(step, {"steps_per_sec": rate})
        eta = (self._num_steps - step) / rate
        absl_logging.info("step %d/%d: %.2f steps/s, %.0f s to go", step, self._num_steps,
                          rate, eta)
        self._last = (step, now)


def read_jsonl(path: str) -> list[dict]:
    """The rows a ``JsonlWriter`` wrote (for notebooks and tests)."""
    return [json.loads(line) for line in epath.Path(path).read_text().splitlines()
            if line.strip()]


def create_writer(workdir: str, asynchronous: bool = True) -> MetricWriter:
    """TensorBoard + logging + ``metrics.jsonl`` on process 0; nothing elsewhere.

    Asynchronous by default: the file writers run on a background thread (order kept), so
    the step loop does not wait for a file system or a bucket; ``flush`` waits for
    everything written so far."""
    if jax.process_index() != 0:
        return MultiWriter([])
    # events.EventFileWriter has the MetricWriter methods (it cannot subclass it: writers
    # imports events).
    to_files = MultiWriter([events.EventFileWriter(workdir),
                            JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])
    return MultiWriter([LoggingWriter(), AsyncWriter(to_files) if asynchronous else to_files])


# Orbax warnings that are expected when a checkpoint is read for one item only (read-only
# managers, the trainer's "meta"/"data" items left on disk): nothing for a user to do.
_EXPECTED_ORBAX_WARNINGS = ("CheckpointManagerOptions.read_only=True",
                            "Given directory is read only",
                            "was found in the checkpoint, but could not be restored")


class _DropOrbaxInfo(logging.Filter):
    """Drops orbax's INFO lines (about 40 per checkpoint save, between the progress bar's
    updates) and its expected warnings; other warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        if record.levelno <= logging.INFO:
            return False
        message = record.getMessage()
        return not any(text in message for text in _EXPECTED_ORBAX_WARNINGS)


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
    panels = epath.Path(workdir) / "panels"
    paths = sorted(panels.glob("*.png")) if panels.is_dir() else []
    for path in paths:
        image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            writer.write_images(step, {f"panels/{path.stem}": rgb[None]})
    writer.flush()
    writer.close()
    return len(paths)
