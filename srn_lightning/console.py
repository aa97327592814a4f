"""What a job shows on the console: its own lines, not Lightning's chatter; a progress bar only where a
person watches a terminal; in a sweep, every line with the number of the job that wrote it.

Hydra's job logging has two handlers: the console and the run's train.log. Everything here changes the
console handler only, so train.log keeps every line Lightning logs.
"""

from __future__ import annotations

import logging
import sys

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
    return sys.stdout.isatty() and not parallel
