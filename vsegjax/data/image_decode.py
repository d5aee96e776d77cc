"""Decoding an image file with OpenCV, and hearing what libjpeg says while it does.

OpenCV decodes a JPEG whose entropy-coded data is damaged (bytes overwritten in the
middle, end marker intact) into a picture that is partly grey or smeared, returns it as
if nothing happened, and leaves libjpeg's warning ("Corrupt JPEG data: premature end of
data segment") on the process's stderr, where no caller sees it. ``decode`` points fd 2
at a temporary file for the length of one JPEG decode, keeps libjpeg's corruption
warnings and passes every other line back to the real stderr.

fd 2 belongs to the whole process, so JPEG decodes are serialised by a lock (a decode is
milliseconds; the threads of a dataset build still overlap reading and everything
else). Other formats are decoded without the redirection.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading

import cv2
import numpy as np

# libjpeg's warnings (JWRN_*) that mean the picture is not what was encoded.
_CORRUPTION = re.compile(r"^(Corrupt JPEG data.*|Premature end of JPEG file.*|"
                         r"Invalid SOS parameters.*|Inconsistent progression sequence.*)$")
_FD_LOCK = threading.Lock()


class CorruptImage(ValueError):
    """The decoder produced pixels but reported that the data was damaged."""


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _decode_capturing_stderr(buffer: np.ndarray, flags: int) -> tuple[np.ndarray | None, str]:
    with _FD_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            try:
                image = cv2.imdecode(buffer, flags)
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        sink.seek(0)
        return image, sink.read().decode("utf-8", errors="replace")


def decode(data: bytes, flags: int, where: str) -> np.ndarray | None:
    """``cv2.imdecode`` of ``data``; ``CorruptImage`` naming ``where`` and quoting libjpeg
    when a JPEG decodes with a corruption warning. ``None`` when OpenCV cannot decode."""
    buffer = np.frombuffer(data, np.uint8)
    if not is_jpeg(data):
        return cv2.imdecode(buffer, flags)
    image, said = _decode_capturing_stderr(buffer, flags)
    complaints, others = [], []
    for line in said.splitlines():
        (complaints if _CORRUPTION.match(line.strip()) else others).append(line)
    if others:  # not ours (another thread's output, or a harmless libjpeg note)
        os.write(2, ("\n".join(others) + "\n").encode())
    if complaints and image is not None:
        raise CorruptImage(f"{where}: the JPEG decoder reports damaged data "
                           f"({'; '.join(c.strip() for c in complaints)}); the decoded picture "
                           f"would be partly grey or garbled. Re-extract or remove the file")
    return image
