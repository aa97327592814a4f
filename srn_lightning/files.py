"""Writing files: atomically (other processes read them while this one writes), and never through
a symbolic link."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
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
    dir, renamed into place); on an error `path` is left as it was.

    The temp file is unnamed while it is written (Linux's O_TMPFILE), so a process killed mid-write
    (SIGKILL, the OOM killer) leaves nothing behind; it gets a name only for the instant before the
    rename. Where the file system has no O_TMPFILE, a named temp file is removed on every error a
    process lives through. The file gets the mode a plain open() would give it under the process's
    umask (0644 under the usual 022), for colleagues, TensorBoard or a web server running as another
    user."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temp_file(path)
        try:
            with os.fdopen(fd, mode, closefd=False, **kwargs) as f:
                yield f
            if tmp is None:
                tmp = _name(fd, path)
            os.replace(tmp, path)
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)


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


def _name(fd: int, path: Path) -> Path:
    """Gives the unnamed file `fd` a temp name beside `path`."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:  # with a dir fd, os.link is linkat(AT_SYMLINK_FOLLOW): /proc's link to the file is followed
        os.link(f"/proc/self/fd/{fd}", tmp.name, dst_dir_fd=dir_fd, follow_symlinks=True)
    finally:
        os.close(dir_fd)
    return tmp


def _temp_file(path: Path) -> tuple[int, str | None]:
    """A file to write `path`'s new content to: (fd, None) for an unnamed one in its dir, or (fd, name)
    where the file system has no unnamed files."""
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):  # Linux; /proc names it later
        try:
            return os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o666), None  # the umask applies
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would be carried over by the rename
    return fd, tmp


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


def shown(path, launched=None) -> Path:
    """`path` as a person reads it on the console: relative to where the command was launched
    (`launched`, by default the working dir) when it lies below it (shorter, and where the user typed
    outputs/ from), else as it is."""
    try:
        return Path(path).relative_to(launched or os.getcwd())
    except ValueError:
        return Path(path)
