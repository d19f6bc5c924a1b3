"""Writes that never leave a half-written file: temp file beside the target, fsync, rename."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: os.PathLike | str, text: str) -> None:
    """Write text to a temp file beside `path`, fsync it, then rename over `path`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> None:
    """A full disk or a crash leaves `path` as it was: the temp file is removed, never renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def fsync_file(path: os.PathLike | str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: os.PathLike | str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
