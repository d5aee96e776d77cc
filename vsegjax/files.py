"""Writing files so that an interruption never leaves a half-written one, on a local disk
or a bucket (``gs://``, through ``etils.epath``), and only once in a multi-process run."""

from __future__ import annotations

import os
import sys
import tempfile

from etils import epath


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; give written files the usual umask-derived mode instead.
_FILE_MODE = 0o666 & ~_current_umask()


def is_writer() -> bool:
    """True on the process that writes a run's shared files: process 0 (every process
    when JAX is not loaded or runs alone)."""
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


def is_local(path: str | os.PathLike) -> bool:
    return "://" not in os.fspath(path)


def resolve(path: str | os.PathLike) -> str:
    """An absolute local path (``~`` expanded), or a bucket URI (``gs://...``) unchanged."""
    path = os.fspath(path)
    return os.path.abspath(os.path.expanduser(path)) if is_local(path) else path


def makedirs(path: str | os.PathLike) -> None:
    """``mkdir -p`` on a disk or a bucket."""
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def isdir(path: str | os.PathLike) -> bool:
    return epath.Path(path).is_dir()


def isfile(path: str | os.PathLike) -> bool:
    p = epath.Path(path)
    return p.exists() and not p.is_dir()


def read_text(path: str | os.PathLike) -> str:
    return epath.Path(path).read_text()


def atomic_write_bytes(path: str | os.PathLike, payload: bytes, *,
                       all_processes: bool = False) -> None:
    """Writes ``payload`` to ``path`` whole or not at all; parent folders are created.

    Locally: a temp file beside ``path`` renamed into place (os.replace is atomic within
    one file system, so readers see the old file or the complete new one). On a bucket an
    object appears only when its upload completes, so it is written directly. In a
    multi-process run only process 0 writes (the run's folder is shared), unless
    ``all_processes``.
    """
    if not (all_processes or is_writer()):
        return
    if not is_local(path):
        target = epath.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        return
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, all_processes: bool = False
                      ) -> None:
    atomic_write_bytes(path, text.encode(), all_processes=all_processes)
