"""Every signal that ends a process, at any moment of a run: the run knows which phase it is in, and
a signal becomes `Interrupted` carrying that phase and the signal's name, so every stop ends with a
record that says where and why.

`STOPS` is the one table of what each signal means here; a launcher's own meaning of one (submitit's
USR2: requeue) follows the run's record (srn_lightning/cluster.py). SIGPIPE is not among them: Python ignores it, and a console that goes away costs a run its
console lines only (console.py).

A signal never goes missing. The handler notes it (`pending`) and:
- in the fit, does nothing more: the fit stops at its next stop point, which the model reaches at
  every time position of its forward and (on the CPU) backward pass (`stop_point`), so a step of any
  length is cut within a position's time, and never in the middle of a checkpoint being saved;
- while a file of the record is written (`deferred`), waits for that to end;
- for SIGXFSZ, does nothing more: the write past a file-size limit that sent it fails with an
  error naming its file, and the run's record says which (a SIGXFSZ sent with `kill` is acted on
  at the next phase change or stop point);
- while the garbage collector runs (an exception raised in one of its callbacks would be printed
  and dropped), sends the signal again a moment later;
- everywhere else raises `Interrupted` where the signal lands.
A signal is pending until an `Interrupted` for it has reached the code that writes the record
(`acted`); every phase change and every stop point checks, so one raised where something swallows
it is raised again at the next. The first signal is the one acted on: later ones are logged and
ignored, so a second Ctrl-C cannot cut the writing of the record short.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

# What each signal that ends a process means here: every one stops a run with an `interrupted`
# record naming it. Where a launcher gives one a meaning of its own, that meaning follows the record
# (srn_lightning/cluster.py): submitit's USR2 (a time limit or preemption) and Slurm's SIGTERM of
# preemption requeue the job once the run has written its record. Lightning's own Slurm handling
# (its SIGUSR1 requeue) is off: the Trainer gets its cluster environment, so one mechanism requeues.
STOPS = {
    signal.SIGINT: "Ctrl-C",
    signal.SIGTERM: "kill, timeout, a pool or cluster ending a job (Slurm's preemption, scancel, scontrol requeue)",
    signal.SIGHUP: "the terminal closed, an ssh connection dropped",
    signal.SIGQUIT: "Ctrl-\\",
    signal.SIGUSR1: "a user's or batch system's signal",
    signal.SIGUSR2: "a user's or batch system's signal; in a submitit job, its time limit or preemption (requeued)",
    signal.SIGALRM: "a timer (alarm)",
    signal.SIGXCPU: "a CPU-time limit (ulimit -t, a batch system's soft limit)",
    signal.SIGXFSZ: "a file-size limit (ulimit -f)",
}
SIGNALS = tuple(STOPS)


class Interrupted(BaseException):
    """A run stopped by a signal in `phase`. A BaseException, as KeyboardInterrupt is: no
    `except Exception` on the way up mistakes it for a failure."""

    def __init__(self, phase: str, signum: int) -> None:
        self.phase, self.signal = phase, signal.Signals(signum).name
        super().__init__(f"{self.signal} during {phase}")

    def __reduce__(self):  # crosses a process boundary (a joblib worker) intact
        return _rebuild_interrupted, (self.phase, self.signal)


def _rebuild_interrupted(phase: str, name: str) -> Interrupted:
    return Interrupted(phase, signal.Signals[name])


class _State:
    received: int | None = None  # the first signal, acted on or not
    pending: int | None = None  # received, and no Interrupted for it has reached the record yet
    deferring = 0
    collecting = False  # the garbage collector runs


_state = _State()
_active: list[Phases] = []  # the Phases in effect, innermost last


class Phases:
    """The run's current phase, and the signal handler that turns a signal into `Interrupted` in it.
    Use as a context manager: the handlers are installed for its duration (in the main thread only:
    Python delivers signals there), and the previous ones restored after. The outermost one starts
    with no signal received; a signal still pending as it ends is raised then."""

    def __init__(self, phase: str = "setup") -> None:
        self.phase = phase
        self._previous: dict = {}

    @property
    def signum(self) -> int | None:
        """The first signal received."""
        return _state.received

    def __enter__(self) -> Phases:
        if threading.current_thread() is threading.main_thread():
            if not _active:
                _state.received = _state.pending = None
                _state.deferring = 0
                _watch_collections()
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
            _active.append(self)
        return self

    def __exit__(self, kind, err, tb) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if self in _active:
            _active.remove(self)
        if kind is None and _state.pending is not None and not _active:
            check()  # a signal that nothing acted on: not lost at the end either

    def enter(self, phase: str) -> None:
        """Starts `phase` (after acting on a signal pending from the one before); the log line is
        what tests and people watching the log go by."""
        check()
        self.phase = phase
        log.info("phase: %s", phase)

    def check(self) -> None:
        check()

    def _handle(self, signum, frame) -> None:
        again = signum == _state.pending  # still pending: sent again (`_on_stop`), or repeated
        if _state.received is not None and not again:
            log.warning("%s: already stopping; the run's record is being written",
                        signal.Signals(signum).name)
            return
        if not again:
            _state.received = _state.pending = signum
            log.info("%s received during %s", signal.Signals(signum).name, _phase())
            if _sweep.dir is not None:
                stop_jobs(_sweep.dir, signum)
        if _sweep.dir is not None and _phase() == OUTSIDE:
            return  # a sweep's launching process: it waits for its jobs, and ends non-zero
        if _state.deferring or _phase() == "fit" or signum == signal.SIGXFSZ:
            # acted on at the next stop point or phase change, or as the block ends. A file-size
            # limit's SIGXFSZ comes with its write's own error (EFBIG), which names the file and
            # fails the run where it is raised, with its record
            return
        if _state.collecting:
            # raised in a collector's callback it would be printed and dropped: sent again in a
            # moment, when the collection is over (the next phase change or stop point acts on it
            # in any case)
            timer = threading.Timer(0.01, _send_again, args=(signum,))
            timer.daemon = True
            timer.start()
            return
        check()


OUTSIDE = "start-up or exit"  # the phase of a process outside any run: the CLI's own, a launcher's


def _phase() -> str:
    return _active[-1].phase if _active else OUTSIDE


def check() -> None:
    """Raises `Interrupted` for a signal received and not acted on yet, unless a file of the record
    is being written (`deferred`)."""
    if _state.pending is not None and not _state.deferring:
        raise Interrupted(_phase(), _state.pending)


def stop_point() -> None:
    """Where a fit may stop: called at every time position of the model's passes. Cheap when no
    signal came."""
    if _state.pending is not None:
        check()


def acted() -> None:
    """The `Interrupted` raised for the pending signal has reached the code that writes the record."""
    _state.pending = None


def received() -> int | None:
    """The first signal received by the current Phases, if any."""
    return _state.received


@contextlib.contextmanager
def deferred():
    """Signals wait until the block is done: a file is written whole or not at all. A signal that
    came meanwhile is acted on as the block ends. (A signal mask would not do: in a process with
    other threads, TensorBoard's writer or torch's, the kernel hands a signal to any thread that
    does not block it.)"""
    if not _active:
        yield
        return
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    check()


def _watch_collections() -> None:
    """Tracks whether the garbage collector runs (`_State.collecting`): the first of its callbacks
    sees it start, the last sees it stop."""
    if _on_start not in gc.callbacks:
        gc.callbacks.insert(0, _on_start)
        gc.callbacks.append(_on_stop)


def _on_start(phase, info) -> None:
    if phase == "start":
        _state.collecting = True


def _on_stop(phase, info) -> None:
    if phase == "stop":
        _state.collecting = False  # the last statement: a signal after it is handled out of gc


def _send_again(signum: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), signum)


# ---- a sweep whose jobs run in other processes -------------------------------------------------

STOP_NAME = ".stopping"  # in a sweep dir: the signal that stopped the sweep


class _Sweep:
    dir: Path | None = None  # the sweep this process launches, when its jobs run in other processes


_sweep = _Sweep()


def launched_sweep() -> Path | None:
    """The sweep dir this process launches, when its jobs run in other processes of this machine."""
    return _sweep.dir


class StopSweep(Callback):
    """Hydra callback: a signal to the launching process of a sweep whose jobs run in other
    processes of this machine (joblib's workers, submitit_local's jobs) stops the sweep without
    losing a job. The
    launching process notes the signal in the sweep dir (`.stopping`), sends it to every job that
    runs (the holders of the job dirs' locks), which stop with their `interrupted` records, and
    waits for them; a job that starts after it stops at once with its record (phase `queued`). The
    launching process then ends non-zero. (With the basic launcher the jobs run in the launching
    process itself: the signal stops the running job, and the sweep.)"""

    # the launchers whose jobs run on this machine, as processes of their own: a job's pid (in its
    # dir's lock) is one this process can signal. Slurm's jobs run on other nodes: Slurm stops them.
    LOCAL = ("JoblibLauncher", "LocalLauncher")

    def on_multirun_start(self, config, **kwargs) -> None:
        if str(config.hydra.launcher.get("_target_", "")).endswith(self.LOCAL):
            sweep_dir = Path(config.hydra.sweep.dir)
            _sweep.dir = sweep_dir if sweep_dir.is_absolute() else Path(config.hydra.runtime.cwd) / sweep_dir
            (_sweep.dir / STOP_NAME).unlink(missing_ok=True)  # an earlier stop's, when added to


def stop_jobs(sweep_dir: Path, signum: int) -> None:
    """`.stopping` in `sweep_dir`, then `signum` to every other process that runs one of its jobs."""
    from srn_lightning import locks
    from srn_lightning.files import write_atomic

    with contextlib.suppress(OSError):
        write_atomic(sweep_dir / STOP_NAME, signal.Signals(signum).name + "\n")
    for job_dir in (p for p in sweep_dir.iterdir() if p.is_dir()) if sweep_dir.is_dir() else ():
        pid = locks.holder(job_dir)
        if pid is not None and pid != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
                log.info("%s sent to the job in %s (process %d)", signal.Signals(signum).name,
                         job_dir.name, pid)


def check_sweep(sweep_dir) -> None:
    """Raises `Interrupted` (phase `queued`) for a job of a sweep that was stopped before it began."""
    try:
        name = (Path(sweep_dir) / STOP_NAME).read_text().strip()
    except OSError:
        return
    if name in signal.Signals.__members__:
        raise Interrupted("queued", signal.Signals[name])
