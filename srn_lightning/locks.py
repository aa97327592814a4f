"""One writer per run dir and per sweep dir: a process holds an exclusive `flock` on the dir's
`.lock` file for as long as it writes there, with its pid in the file for the message others get.
The kernel drops a flock when its holder exits, however it exits (SIGKILL included): a lock left
by a dead process never blocks."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from srn_lightning.errors import UserError

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # dir -> fd of its lock file, for the dirs this process holds


class InUseError(UserError, RuntimeError):
    """Another live process writes the dir; str() names it and its pid."""


def _open(path: Path, create: bool) -> int:
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | (os.O_CREAT if create else 0)
    # 0666 less the umask, as a plain open() gives: under a group's umask (002) a colleague can
    # take the lock of a run or sweep dir to resume or add to it
    return os.open(path, flags, 0o666)


def _refuse(directory, fd: int) -> None:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    os.close(fd)
    raise InUseError(f"{directory}: in use by process {holder} (one process at a time writes a run "
                     "or sweep dir); wait for it to end, or choose another dir")


def check_free(directory) -> None:
    """Raises InUseError if another process holds `directory`; creates nothing."""
    d = Path(directory).absolute()
    if d in _held:
        return
    try:
        fd = _open(d / LOCK_NAME, create=False)
    except OSError:  # no lock file (or not one to open): nobody holds it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        _refuse(directory, fd)
    os.close(fd)


def hold(directory) -> None:
    """Takes `directory` (made if missing) for this process, until `release` or the process's end;
    raises InUseError naming the holder if another process has it. Holding it twice is once."""
    d = Path(directory).absolute()
    if d in _held:
        return
    d.mkdir(parents=True, exist_ok=True)
    try:
        fd = _open(d / LOCK_NAME, create=True)
    except OSError as err:
        raise InUseError(f"{d / LOCK_NAME}: cannot be opened as this dir's lock ({err.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _refuse(directory, fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[d] = fd


def release(directory) -> None:
    """Lets `directory` go (closing the file drops the lock)."""
    fd = _held.pop(Path(directory).absolute(), None)
    if fd is not None:
        os.close(fd)


def holder(directory) -> int | None:
    """The pid of another live process that holds `directory`, or None."""
    d = Path(directory).absolute()
    if d in _held:
        return None
    try:
        fd = _open(d / LOCK_NAME, create=False)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None
    finally:
        os.close(fd)  # drops the shared lock too, when it was taken
    return None
