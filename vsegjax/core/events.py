"""TensorBoard event files without TensorFlow.

An event file is a sequence of TFRecord-framed ``Event`` protos; the protos, the framing
(masked CRC-32C) and the plugin metadata all come from the ``tensorboard`` package, which
does not need TensorFlow. Scalars are written as ``simple_value``, images as PNG
``Summary.Image``, texts and hyperparameters with the text and hparams plugins' metadata:
the forms TensorBoard's own readers accept.

A bucket (``gs://``) has no append: there each ``flush`` uploads what was written since the
last one as a new event file (TensorBoard reads every ``*tfevents*`` file of a folder, in
name order), so nothing written before a flush is lost if the job is stopped.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from typing import Any, Mapping

import cv2
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2 as hparams_pb2
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

from vsegjax import files


def _string_tensor(text: str) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                                  tensor_shape=tensor_shape_pb2.TensorShapeProto())


def _png(image: np.ndarray) -> summary_pb2.Summary.Image:
    """uint8 RGB [H, W, 3] (or grey [H, W] / [H, W, 1]) as a PNG ``Summary.Image``."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"an image must be [H, W], [H, W, 1] or [H, W, 3]; got {image.shape}")
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    return summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1],
                                     colorspace=1 if image.ndim == 2 else 3,
                                     encoded_image_string=encoded.tobytes())


class EventFileWriter:
    """Writes summaries into ``logdir/events.out.tfevents.<time>.<host>.<pid>.<n>``."""

    def __init__(self, logdir: str):
        self._logdir = logdir
        self._local = files.is_local(logdir)
        self._count = 0
        self._file: Any = None
        self._records: RecordWriter | None = None
        self._path = ""

    def _start_file(self) -> None:
        name = (f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}."
                f"{os.getpid()}.{self._count}")
        self._count += 1
        self._path = os.path.join(self._logdir, name)
        if self._local:
            os.makedirs(self._logdir, exist_ok=True)
            self._file = open(self._path, "wb")
        else:
            self._file = io.BytesIO()
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        if self._records is None:
            self._start_file()
        self._records.write(event.SerializeToString())

    def _summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        if values:
            self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                        summary=summary_pb2.Summary(value=values)))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._summary(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                             for k, v in scalars.items()])

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """``images``: name -> [H, W, C] or a batch [N, H, W, C] (one tag per picture)."""
        values = []
        for tag, batch in images.items():
            batch = np.asarray(batch)
            batch = batch[None] if batch.ndim == 2 or (batch.ndim == 3 and batch.shape[-1]
                                                        in (1, 3)) else batch
            for i, image in enumerate(batch):
                name = tag if len(batch) == 1 else f"{tag}/image/{i}"
                values.append(summary_pb2.Summary.Value(tag=name, image=_png(image)))
        self._summary(step, values)

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        meta = text_metadata.create_summary_metadata(display_name=None, description=None)
        self._summary(step, [summary_pb2.Summary.Value(tag=k, metadata=meta,
                                                       tensor=_string_tensor(str(v)))
                             for k, v in texts.items()])

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """The run's configuration for TensorBoard's HParams tab (numbers, booleans and
        strings; anything else as its text)."""
        info = hparams_pb2.SessionStartInfo(start_time_secs=time.time())
        for name, value in hparams.items():
            if isinstance(value, bool):
                info.hparams[name].bool_value = value
            elif isinstance(value, (int, float)):
                info.hparams[name].number_value = value
            else:
                info.hparams[name].string_value = (value if isinstance(value, str)
                                                   else json.dumps(value, default=str))
        meta = hparams_metadata.create_summary_metadata(
            hparams_pb2.HParamsPluginData(session_start_info=info))
        self._summary(0, [summary_pb2.Summary.Value(
            tag=hparams_metadata.SESSION_START_INFO_TAG, metadata=meta,
            tensor=hparams_metadata.NULL_TENSOR)])

    def flush(self) -> None:
        if self._records is None:
            return
        if self._local:
            self._file.flush()
            return
        # A bucket object appears whole when uploaded; the next write starts a new file.
        files.atomic_write_bytes(self._path, self._file.getvalue(), all_processes=True)
        self._file = self._records = None

    def close(self) -> None:
        self.flush()
        if self._local and self._file is not None:
            self._file.close()
        self._file = self._records = None
