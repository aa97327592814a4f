"""SIGINT and SIGTERM at any moment of a run: the run knows which phase it is in, and a signal
becomes `Interrupted` carrying that phase, so every stop ends with a record that says where.

Inside the fit, SIGTERM is left to Lightning: its `_SignalConnector` wraps the handler installed
here, notes the signal and stops the fit at the next step, where the last checkpoint is whole.
Everywhere else (data, test, figures, and the fit's own set-up before Lightning's handler is in
place) the signal is raised where it lands; while a file of the record is written (`deferred`), as
soon as it is whole. The first signal is the one acted on: later ones are logged and ignored, so a
second Ctrl-C cannot cut the writing of the record short.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

log = logging.getLogger(__name__)

# SIGUSR2: submitit's requeue signal (Slurm's warning before a time limit); acted on as SIGINT is,
# then handed to submitit (srn_lightning/cluster.py)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class Interrupted(BaseException):
    """A run stopped by SIGINT or SIGTERM in `phase`. A BaseException, as KeyboardInterrupt is:
    no `except Exception` on the way up mistakes it for a failure."""

    def __init__(self, phase: str, signum: int) -> None:
        self.phase, self.signal = phase, signal.Signals(signum).name
        super().__init__(f"{self.signal} during {phase}")


class Phases:
    """The run's current phase, and the signal handler that turns SIGINT/SIGTERM into `Interrupted`
    in it. Use as a context manager: the handlers are installed for its duration (in the main
    thread only: Python delivers signals there), and the previous ones restored after."""

    def __init__(self, phase: str = "setup") -> None:
        self.phase = phase
        self.signum: int | None = None  # the first signal received
        self._acted = False  # Interrupted raised for it
        self._deferring = 0
        self._previous: dict = {}

    def __enter__(self) -> Phases:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
            _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if self in _active:
            _active.remove(self)

    def enter(self, phase: str) -> None:
        """Starts `phase`; the log line is what tests and people watching the log go by."""
        self.phase = phase
        log.info("phase: %s", phase)

    def check(self) -> None:
        """Raises `Interrupted` for a signal noted but not acted on yet (a SIGTERM that Lightning
        handled in a fit, or one that came as the fit ended, or while a file was written)."""
        if self.signum is not None and not self._acted:
            self._acted = True
            raise Interrupted(self.phase, self.signum)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            log.warning("%s: already stopping; the run's record is being written",
                        signal.Signals(signum).name)
            return
        self.signum = signum
        if self._deferring:
            return  # acted on as the deferred block ends
        # Lightning's handler calls this one from its own while it fits: it stops at the next step
        wrapped = signal.getsignal(signum) is not self._handle
        if self.phase == "fit" and signum == signal.SIGTERM and wrapped:
            return
        self.check()


_active: list[Phases] = []  # the Phases whose handlers are installed, innermost last


@contextlib.contextmanager
def deferred():
    """SIGINT and SIGTERM wait until the block is done: a file is written whole or not at all. A
    signal that came meanwhile is acted on as the block ends. (A signal mask would not do: in a
    process with other threads, TensorBoard's writer or torch's, the kernel hands a signal to any
    thread that does not block it.)"""
    phases = _active[-1] if _active else None
    if phases is None:
        yield
        return
    phases._deferring += 1
    try:
        yield
    finally:
        phases._deferring -= 1
    if not phases._deferring:
        phases.check()
