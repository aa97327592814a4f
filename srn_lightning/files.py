"""Writing files: atomically (other processes read them while this one writes), and never through
a symbolic link."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from srn_lightning.errors import UserError


def write_atomic(path, text: str) -> None:
    """Write via a temp file in the same dir and rename: readers see the old file or the whole new one,
    never a partial or interleaved one, however many processes write at once."""
    with open_atomic(path, "w", newline="") as f:  # written as given: no newline translation
        f.write(text)


@contextlib.contextmanager
def open_atomic(path, mode: str = "w", **kwargs):
    """A file object for `path` that lands there, whole, when the block ends (a temp file in the same
    dir, renamed into place); on an error the temp file is removed and `path` is left as it was.

    The file gets the mode a plain open() would give it under the process's umask (0644 under the
    usual 022): mkstemp creates its file 0600, and the rename would carry that private mode over to
    results that colleagues, TensorBoard or a web server running as another user must read."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
            with os.fdopen(fd, mode, **kwargs) as f:
                yield f
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def naming(path):
    """An OSError raised in the block that names no file (a write that fails: a full disk, a
    file-size limit) names `path`, so that its message says which file failed; so does one that
    another exception (a signal's, a file-size limit's SIGXFSZ) replaced as it was raised."""
    try:
        yield
    except BaseException as err:
        failed = err if isinstance(err, OSError) else err.__context__
        if isinstance(failed, OSError) and failed.filename is None and failed.strerror is not None:
            failed.filename = str(path)
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


def current_umask() -> int:
    """The process's umask. Read from /proc where Linux offers it: setting it to read it back (the
    only portable way) would, for that instant, change it for every thread of the process."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shown(path) -> Path:
    """`path` as a person reads it on the console: relative to where the command was launched when
    it lies below it (shorter, and where the user typed outputs/ from), else as it is."""
    try:
        return Path(path).relative_to(os.getcwd())
    except ValueError:
        return Path(path)
