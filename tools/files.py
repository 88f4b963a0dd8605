"""Atomic artifact writing: write to a temporary sibling, then rename, so a failure never
leaves a half-written or clobbered file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..ir.errors import ConversionError


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents; ConversionError (not a traceback) when it is missing, a
    directory or binary."""
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"no such file: {p}")
    if p.is_dir():
        raise ConversionError(f"{p} is a directory, expected a file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConversionError(f"{p} is not UTF-8 text (byte {e.start})") from None

