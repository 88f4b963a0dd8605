"""Atomic artifact writing: write to a temporary sibling, then rename, so a failure never
leaves a half-written or clobbered file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..backends.common import write_chunked
from ..ir.errors import ConversionError


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_chunked(f, data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def existing_path(path: str | os.PathLike, missing: str = "no such file or directory") -> Path:
    """`path` as a Path when it exists; ConversionError `"{missing}: {path}"` when it does not,
    or when the OS refuses to look it up (a name too long, a NUL character, a symlink loop)."""
    text = os.fspath(path)
    if "\0" in text:
        raise ConversionError(f"{missing}: {text!r} (the path contains a NUL character)")
    p = Path(text)
    try:
        found = p.exists()
    except OSError as e:
        raise ConversionError(f"{missing}: {_short(text)} ({e.strerror or e})") from None
    if not found:
        raise ConversionError(f"{missing}: {p}")
    return p


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents; ConversionError (not a traceback) when it is missing, a
    directory or binary."""
    p = existing_path(path, "no such file")
    if p.is_dir():
        raise ConversionError(f"{p} is a directory, expected a file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConversionError(f"{p} is not UTF-8 text (byte {e.start})") from None



def check_output_path(path: str | os.PathLike, *, directory: bool | None = False,
                      what: str = "output") -> Path:
    """`path` if an artifact can be written there; otherwise ConversionError naming the path
    and the reason, raised before any work is done: an empty path, an existing directory
    where a file goes (or a file or a device where a directory goes), a parent that is a
    file, a component too long, or a directory that cannot be written in. Missing parent
    directories are fine (they are created). `directory=None`: either kind will do."""
    text = os.fspath(path)
    if not text:
        raise ConversionError(f"{what} path is empty")
    if "\0" in text:
        raise ConversionError(f"{what} path {text!r} contains a NUL character")
    p = Path(text)
    try:
        if p.exists():
            if directory is None:
                pass
            elif directory and not p.is_dir():
                raise ConversionError(f"{what} {p} exists and is not a directory")
            elif not directory and p.is_dir():
                raise ConversionError(f"{what} {p} is a directory, expected a file")
            elif not directory and not p.is_file():
                raise ConversionError(f"{what} {p} is not a regular file (a device, pipe or "
                                      f"socket); name a file to write")
        anc, missing = p.absolute().parent, [p.name]
        while not anc.exists() and anc != anc.parent:
            missing.append(anc.name)
            anc = anc.parent
        long = [m for m in missing if len(os.fsencode(m)) > 255]
        if long:
            raise ConversionError(f"{what} {p}: the name {long[0][:40]!r}... is longer than "
                                  f"255 bytes")
        if not anc.is_dir():
            raise ConversionError(f"{what} {p}: {anc} is not a directory")
        try:   # writable? (os.access is wrong for root and for read-only file systems)
            fd, probe = tempfile.mkstemp(prefix=".tensorforge-probe-", dir=anc)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ConversionError(f"{what} {p}: cannot write in {anc} "
                                  f"({e.strerror or type(e).__name__})") from None
    except OSError as e:    # a path the OS refuses to look at (ENAMETOOLONG, ELOOP, ...)
        raise ConversionError(f"{what} {text!r}: {e.strerror or e}") from None
    return p
