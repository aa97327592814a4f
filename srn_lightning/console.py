"""What a job shows on the console: its own lines, not Lightning's chatter; a progress bar only where a
person watches a terminal; in a sweep, every line with the number of the job that wrote it.

Hydra's job logging has two handlers: the console and the run's train.log. Everything here changes the
console handler only, so train.log keeps every line Lightning logs.

The console is never a point of failure (`steady_streams`): a process started without stdout (`>&-`,
as cron or a daemon runs it), a console that goes away (`| head -1`, a closed terminal, a full disk
under `> file`) or one that cannot encode a character (an ASCII-only locale) costs the run nothing
but console lines, and is said in one line at most; train.log keeps every line.

`setup_process` sets up a process that runs jobs: its console, warning filters, exit handler, threads.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import logging
import os
import sys
import threading
import warnings

from omegaconf import DictConfig

log = logging.getLogger(__name__)

# Loggers whose INFO lines (hardware found, tips and ads, checkpoint restored) say nothing about the
# experiment; their warnings and errors still reach the console.
CHATTY = ("lightning", "pytorch_lightning")


# A record logged with extra={CONSOLE: False} goes to train.log only: the console says it otherwise.
CONSOLE = "console"


class QuietLightning(logging.Filter):
    """Lets Lightning's warnings and errors through, not its INFO lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(CHATTY)


class LogFileOnly(logging.Filter):
    """Keeps the records logged with extra={CONSOLE: False} off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, CONSOLE, True)


class JobPrefix(logging.Formatter):
    """Another formatter's lines, each (multi-line messages too) led by `prefix`."""

    def __init__(self, inner: logging.Formatter | None, prefix: str) -> None:
        super().__init__()
        self.inner, self.prefix = inner or logging.Formatter(), prefix

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(self.prefix + line for line in self.inner.format(record).splitlines())


def console_handlers() -> list[logging.Handler]:
    """The root logger's handlers that write to a stream, not to a file."""
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def setup_console(verbose: bool, job_num: int | None) -> None:
    """Unless `verbose`, Lightning's INFO lines leave the console (they stay in train.log). With a
    `job_num` (a job of a sweep), every console line starts with `[job N]`: jobs running side by side
    write to one terminal. Python warnings go through the log too, so they get the prefix and land
    in train.log."""
    for handler in console_handlers():
        if not any(isinstance(f, LogFileOnly) for f in handler.filters):
            handler.addFilter(LogFileOnly())
        if not verbose and not any(isinstance(f, QuietLightning) for f in handler.filters):
            handler.addFilter(QuietLightning())
        if job_num is not None and not isinstance(handler.formatter, JobPrefix):
            handler.setFormatter(JobPrefix(handler.formatter, f"[job {job_num}] "))
    logging.captureWarnings(True)


def progress_bar_default(parallel: bool) -> bool:
    """A progress bar only for a person at a terminal: not in a log file, a Slurm log or CI output,
    where every redraw is a line, and not when jobs run side by side, whose bars would overwrite
    each other. Lightning's bars write to stdout."""
    return sys.stdout is not None and sys.stdout.isatty() and not parallel


# ---- a console that cannot fail the run ----------------------------------------------------------

class SteadyStream(io.TextIOBase):
    """stdout or stderr as a run writes to it: a character the console cannot encode is written as
    a backslash escape (the line is kept), and a console that fails (EPIPE from `| head -1`, EIO
    from a closed terminal, ENOSPC from a redirect to a full disk, a closed file) is dropped: the
    process says so once, on the other stream, and goes on with its record."""

    def __init__(self, stream, name: str) -> None:
        super().__init__()
        self.stream, self.name, self.lost = stream, name, False
        try:  # an ASCII-only console gets `\xfc`, never a UnicodeEncodeError
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self.stream.write(text)
            except UnicodeEncodeError:
                enc = getattr(self.stream, "encoding", None) or "ascii"
                return self.write(text.encode(enc, "backslashreplace").decode(enc))
            except (OSError, ValueError) as err:
                self._lose(err)
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except (OSError, ValueError) as err:
                self._lose(err)

    def isatty(self) -> bool:
        try:
            return not self.lost and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", None)

    @property
    def errors(self):
        return getattr(self.stream, "errors", None)

    def _lose(self, err: BaseException) -> None:
        self.lost = True
        # /dev/null in its place: what the stream still buffers, and anything writing to the file
        # descriptor itself (the interpreter's flush at exit, a child process), lands nowhere
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)
        _say_once(f"console: {self.name} is gone ({type(err).__name__}: {err}); the run goes on, "
                  "and its train.log keeps every line", self)


def steady_streams() -> None:
    """Makes the console safe for a process that runs jobs: file descriptors 0-2 open (on /dev/null
    where the process was started without them, so no file the run opens takes their place and
    gets console output), and stdout and stderr as `SteadyStream`s; the console handlers of the
    log write to those. Idempotent."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # closed: the next file opened would get this number
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        if isinstance(stream, SteadyStream):
            continue
        if stream is None:  # started without it: Python has no object for the descriptor
            stream = open(fd, "w", closefd=False)
        steady = SteadyStream(stream, name)
        setattr(sys, name, steady)
        for handler in console_handlers():
            if handler.stream is stream:
                handler.setStream(steady)
    threading.excepthook = _thread_failed


def _thread_failed(args) -> None:
    """A background thread that fails (TensorBoard's writer on a full disk) is one log line, not a
    traceback on the console: the run meets the same error where it writes, and its record names
    the file."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger(__name__).error("%s failed: %s: %s", name, args.exc_type.__name__,
                                      args.exc_value)


def _say_once(line: str, lost: SteadyStream) -> None:
    """`line` on the console stream that still works (not `lost`), once per process."""
    global _said
    if _said:
        return
    _said = True
    for stream in (sys.stderr, sys.stdout):
        if stream is not lost and isinstance(stream, SteadyStream) and not stream.lost:
            stream.write(line + "\n")
            stream.flush()
            return


_said = False



# ---- the process that runs jobs -------------------------------------------------------------------------------

def setup_process(cfg: DictConfig, hydra_cfg: DictConfig, job_num: int | None = None) -> None:
    """What a process that runs jobs sets up for each: its console (`job_num`: a sweep's job, by its
    number in the sweep), warning filters, exit handler and torch threads; and, unless the config
    sets it, whether the job shows a progress bar."""
    import lightning
    import torch
    from hydra.types import RunMode
    from omegaconf import open_dict

    steady_streams()  # a joblib worker's or submitit job's own streams
    # Hydra's handlers (console and the run's train.log) print Lightning's messages; its own console
    # handler would print each of them a second time.
    logging.getLogger(lightning.__name__).handlers.clear()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    # `hydra.verbose=...`, Hydra's own switch for more log lines, counts as verbose too
    setup_console(cfg.verbose or bool(hydra_cfg.verbose), job_num if in_sweep else None)
    if cfg.trainer.get("enable_progress_bar") is None:
        with open_dict(cfg):
            cfg.trainer.enable_progress_bar = progress_bar_default(
                parallel=in_sweep and hydra_cfg.launcher.get("n_jobs", 1) != 1)
    # Everything lives in memory: worker processes would only slow a run this small down.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated")  # torch 2.13 vs Lightning 2.6
    exit_without_final_collection()
    threads = job_threads(cfg, hydra_cfg.launcher)
    if threads:
        torch.set_num_threads(threads)
    log.info("torch threads: %d", torch.get_num_threads())


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def job_threads(cfg: DictConfig, launcher: DictConfig) -> int | None:
    """Torch CPU threads for one job: `threads` if set; else a share of the cores when a launcher
    runs jobs side by side (joblib: cores // n_jobs; submitit: its cpus_per_task, else 1), so
    parallel jobs do not oversubscribe the machine; else None, torch's own default."""
    if cfg.threads is not None and cfg.threads >= 1:  # other values: refused by validate(), in run()
        return cfg.threads
    if "n_jobs" in launcher:  # joblib; negative counts back from the cores, as joblib does
        n_jobs = launcher.n_jobs if launcher.n_jobs > 0 else max(1, cores() + 1 + launcher.n_jobs)
        return max(1, cores() // n_jobs)
    if "cpus_per_task" in launcher:
        return launcher.cpus_per_task or 1
    return None


def exit_without_final_collection() -> None:
    """At interpreter exit, leave out the garbage collection of what is still alive.

    With torch, Lightning, TensorBoard and matplotlib loaded, Python's shutdown spends 1.3-1.7 s
    collecting their objects as it tears the modules down; the process's memory goes back to the
    system either way. A `gc.freeze()` exit handler skips that: the process exits in about 0.2 s
    (benchmarks/exit.py). Registered once in every process of the command: the one it starts (a
    single run's, or a sweep's launching process, which may draw the sweep report), each joblib
    worker, each submitit job. Exit handlers run newest first: registered as the command starts,
    this one runs after the others (Hydra's, joblib's, the sweep report's), which still run, and
    what they leave alive is left to the system too; registered as a worker's first job starts,
    it runs before those registered earlier. Python never promised `__del__` for objects alive at
    exit; everything the project writes is closed explicitly."""
    global _exit_registered
    if not _exit_registered:
        atexit.register(gc.freeze)
        _exit_registered = True


_exit_registered = False
