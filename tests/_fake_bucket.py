"""A stand-in for a ``gs://`` bucket in tests: etils.epath's GCS backend replaced by one
that keeps ``gs://<bucket>/<key>`` under a local folder and behaves as object storage
does where it matters to a writer: no appending, no partial objects (an object is written
by one ``open(..., 'w')`` and appears on close)."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Iterator
from unittest import mock

from etils.epath import backend as backend_lib
from etils.epath import gpath

_OS = backend_lib.os_backend


class _Upload(io.BytesIO):
    """An object being uploaded: visible only once closed, whole."""

    def __init__(self, path: str, text: bool):
        super().__init__()
        self._path, self._text = path, text

    def write(self, data):  # text-mode writers hand over str
        return super().write(data.encode() if isinstance(data, str) else data)

    def close(self) -> None:
        if not self.closed:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            with open(self._path, "wb") as f:
                f.write(self.getvalue())
        super().close()


class FakeBucket(backend_lib.Backend):
    def __init__(self, root: str):
        self.root = root
        self.appends = 0  # attempts to append (refused, as by GCS)

    def local(self, path) -> str:
        path = os.fspath(path)
        if not path.startswith("gs://"):
            raise ValueError(f"not a bucket path: {path}")
        return os.path.join(self.root, path[len("gs://"):])

    def _uri(self, local: str) -> str:
        return "gs://" + os.path.relpath(local, self.root)

    def open(self, path, mode):
        if "a" in mode or "+" in mode:
            self.appends += 1
            raise OSError(f"{path}: a bucket object cannot be appended to or updated")
        if "w" in mode or "x" in mode:
            return _Upload(self.local(path), "b" not in mode)
        return _OS.open(self.local(path), mode)

    def exists(self, path):
        return _OS.exists(self.local(path))

    def isdir(self, path):
        return _OS.isdir(self.local(path))

    def listdir(self, path):
        return _OS.listdir(self.local(path))

    def glob(self, path):
        return [self._uri(p) for p in _OS.glob(self.local(path))]

    def walk(self, top, *, top_down=True, on_error=None):
        for d, dirs, names in _OS.walk(self.local(top), top_down=top_down, on_error=on_error):
            yield self._uri(os.fspath(d)), dirs, names

    def makedirs(self, path, *, exist_ok=False, mode=None):
        _OS.makedirs(self.local(path), exist_ok=True)

    def mkdir(self, path, *, exist_ok=False, mode=None):
        _OS.makedirs(self.local(path), exist_ok=True)

    def rmtree(self, path):
        _OS.rmtree(self.local(path))

    def remove(self, path):
        _OS.remove(self.local(path))

    def rename(self, path, dst):
        _OS.rename(self.local(path), self.local(dst))

    def replace(self, path, dst):
        _OS.replace(self.local(path), self.local(dst))

    def copy(self, path, dst, overwrite):
        _OS.copy(self.local(path), self.local(dst), overwrite=overwrite)

    def stat(self, path):
        return _OS.stat(self.local(path))


@contextlib.contextmanager
def fake_bucket(root: str) -> Iterator[FakeBucket]:
    """``gs://...`` paths through etils.epath land under ``root`` while active."""
    bucket = FakeBucket(root)
    with mock.patch.dict(gpath._PREFIX_TO_BACKEND, {"gs": bucket}), \
            mock.patch.object(gpath, "_is_tf_installed", lambda: False):
        yield bucket
