"""Writing files: atomically (other processes read them while this one writes), and never through
a symbolic link."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from srn_lightning.errors import UserError


def write_atomic(path, text: str) -> None:
    """Write via a temp file in the same dir and rename: readers see the old file or the whole new one,
    never a partial or interleaved one, however many processes write at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:  # written as given: no newline translation
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_nofollow(path, mode: str):
    """Open `path` for writing ("w": truncate, "a": append) as text, refusing a symbolic link in its
    place: a run dir someone hands over cannot make a run write to a file of their choosing."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_TRUNC if mode == "w" else os.O_APPEND
    try:
        fd = os.open(path, flags, 0o666)
    except OSError:
        if Path(path).is_symlink():
            raise UnsafePathError(f"{path}: a symbolic link; a run writes only files of its own dir") from None
        raise
    return os.fdopen(fd, mode, newline="")  # written as given: no newline translation


class UnsafePathError(UserError, OSError):
    """A file of a run dir that is a symbolic link (it could point anywhere)."""
