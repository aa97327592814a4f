"""A joblib sweep's job runs in a process of its own, which its worker only waits for, so that a job
killed outright (SIGKILL: the OOM killer, `kill -9`) fails alone.

joblib's pool (loky) treats a worker that dies as a broken pool: it SIGKILLs every other worker with
its descendants, and runs no further job. Hydra's joblib launcher always uses that pool. So the
worker does not run the job itself: it forks a child that does (`run_alone`), and waits. The OOM
killer picks the process that holds the memory, the job's child; the worker sees how its child
ended, writes the job's `failed` record ("killed by SIGKILL (out of memory?)"), and returns that
failure to the launching process as the job's result, as a job that raised would: the pool, and
the other jobs, go on.

- The child is forked from a worker that has imported torch and Lightning but run nothing of
  them (no thread pool started): it starts in milliseconds, where a fresh interpreter imports them
  in seconds (benchmarks/job_process.py). It holds the job's dir lock, so a signal the launching
  process sends to a job (interrupts.stop_jobs) reaches the child. Before its next job the worker
  imports what its earlier jobs imported, so that child starts with those modules too: a worker
  pays for the imports once, as when it ran its jobs itself, and a job's result goes back without
  waiting for them.
- A signal sent to the worker itself is passed on to its child, which stops with its record.
- The child dies with its worker: should the worker end (killed), the kernel sends the child
  SIGTERM (`PR_SET_PDEATHSIG`), which stops it with its `interrupted` record; no job outlives its
  worker. (A worker killed by SIGKILL still breaks the pool: loky then SIGKILLs the other workers
  and their children before any of them can write a record; docs/robustness.md.)
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from srn_lightning import console, interrupts, locks, plots, record

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATH_SIGNAL = signal.SIGTERM  # the child's, when its worker ends: a stop with the job's record


class _Where:
    in_child = False  # this process is a job's child: it runs the job itself
    to_import: list[str] = []  # what the worker's earlier jobs imported, for its next child


_where = _Where()


class JobKilled(Exception):
    """A job whose process ended without a result (killed by a signal it cannot catch, SIGKILL); its
    `failed` record is written. str() is one line: the job's dir name, and how it ended."""


def wanted(hydra_cfg) -> bool:
    """Whether this job's work goes to a child process: a joblib worker's job (on Linux, where a
    child can be made to die with its parent), unless this process is that child already."""
    from hydra.types import RunMode

    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    return (hydra_cfg.mode == RunMode.MULTIRUN and launcher.endswith("JoblibLauncher")
            and not _where.in_child and sys.platform == "linux")


def run_alone(job: Callable[[], Any], cfg, run_dir, stands_for=None) -> Any:
    """`job()` in a forked child; returns what it returns, raises what it raises. A child that ends
    without a result (killed) gets its `failed` record in `run_dir` (`cfg`'s), or, where the child
    runs several jobs (a group of seeds), in each of `stands_for` ((config, dir) pairs), and
    JobKilled is raised."""
    from multiprocessing.connection import Pipe

    import cloudpickle  # noqa: F401  imported once per worker, before its children fork
    import torch

    # The worker runs no torch op; one that an import might run stays in this thread: OpenMP's
    # pool, once started, cannot be used by a forked child (it waits for ever on the pool's
    # threads, which a fork does not copy). The job sets its own threads (console.setup_process).
    torch.set_num_threads(1)
    import lightning.pytorch  # noqa: F401

    # what the job draws with, which the worker uses too where its job is the sweep's last (it
    # completes the sweep's report, report.SWEEP_JOBS_ENV)
    plots.preload()
    _import(_where.to_import)
    _where.to_import = []
    # the worker, too, exits without collecting what it imported (1.3-1.7 s; console.py), as it
    # did when its jobs ran in it
    console.exit_without_final_collection()

    _flush()  # nothing buffered is written twice
    reader, writer = Pipe(duplex=False)
    worker = os.getpid()
    # What the worker imported (torch's, Lightning's objects: hundreds of thousands) out of its
    # garbage collections, which loky runs after a job, while the other workers' jobs may want the
    # cores: frozen once, with the first job, as they live as long as the worker.
    if not gc.get_freeze_count():
        gc.freeze()
    pid = os.fork()
    if pid == 0:  # the job's process
        reader.close()
        _child(job, writer, worker)
    writer.close()
    with _passing_signals_to(pid):
        try:
            outcome = pickle.loads(reader.recv_bytes())
        except (EOFError, OSError):  # ended without a word (or in the middle of one): killed
            outcome = None
        finally:
            reader.close()
        _, status = os.waitpid(pid, 0)
    if outcome is not None:
        kind, value, imported = outcome
        _where.to_import = imported
        if kind == "raised":
            raise value
        return value
    reason = how_it_ended(os.waitstatus_to_exitcode(status))
    jobs = [(c, Path(d)) for c, d in stands_for or [(cfg, run_dir)]]
    for job_cfg, job_dir in jobs:
        _record_killed(job_cfg, job_dir, reason)
    raise JobKilled(f"{', '.join(d.name for _, d in jobs)}: {reason}")


def _child(job: Callable[[], Any], writer, worker: int) -> None:
    """The job in its own process: its outcome (what it returned, or the exception it raised) goes
    to the worker, pickled as loky pickles a job's result (cloudpickle: what a job returns or raises
    pickles as it would on its way back from a loky worker); never returns."""
    import cloudpickle
    # Everything the child was forked with out of its garbage collections: a collection that walked
    # those objects would touch, and so copy, every page they lie on (freezing touches none of them)
    gc.freeze()
    _where.in_child = True
    code = 0
    try:
        die_with_parent(worker)
        before = set(sys.modules)
        try:
            outcome = ("returned", job())
        except BaseException as err:  # noqa: BLE001  the worker raises it as the job's own
            outcome = ("raised", err)
        imported = [name for name in sys.modules if name not in before]
        try:
            data = cloudpickle.dumps((*outcome, imported))
        except Exception:  # an exception that does not pickle: its type, message and traceback
            err = outcome[1]
            text = "".join(traceback.format_exception(err)).rstrip()
            data = cloudpickle.dumps(("raised", RuntimeError(f"{type(err).__name__}: {err}\n{text}"),
                                      imported))
        writer.send_bytes(data)
    except BaseException:  # noqa: BLE001  the worker has no result: it says how the child ended
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()  # train.log and the console, flushed
            _flush()
        os._exit(code)  # not the worker's exit handlers: they are the worker's


def die_with_parent(parent: int, signum: int = DEATH_SIGNAL) -> None:
    """The kernel sends this process `signum` when its parent ends (Linux's PR_SET_PDEATHSIG; a
    public kernel interface, called through ctypes as the standard library has no binding)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it ended before the call: nothing will send the signal
        raise SystemExit(1)


@contextlib.contextmanager
def _passing_signals_to(pid: int):
    """While the worker waits, a signal that would end it is passed on to its child, which stops
    with its record; the worker then returns that outcome."""
    def forward(signum, frame) -> None:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)

    previous = {s: signal.signal(s, forward) for s in interrupts.SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def how_it_ended(exit_code: int) -> str:
    """One line for a child that ended without a result: by which signal, or with which exit code."""
    if exit_code < 0:
        name = signal.Signals(-exit_code).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"its process ended with exit code {exit_code} before the job's end"


def _record_killed(cfg, run_dir: Path, reason: str) -> None:
    """The `failed` record of a job whose process was killed, unless its record says it ended."""
    log.error("job killed (%s): %s", reason, run_dir)
    try:
        ended = record.read_metrics(run_dir)["status"] in ("completed", "diverged")
    except (OSError, ValueError):
        ended = False
    if ended:
        return
    locks.hold(run_dir)  # the child's lock went with it
    try:
        record.write_metrics(run_dir, record.failed_metrics(cfg, reason))
    except OSError as err:  # a full disk: the log line is the record
        log.error("%s not written (%s); the job's record: failed, %s", run_dir / record.METRICS_NAME,
                  err, reason)
    finally:
        locks.release(run_dir)


def wait_for_jobs(sweep_dir: Path | None, timeout: float = 30.0) -> None:
    """Waits, at most `timeout` s, until no process holds a job dir of `sweep_dir`: the jobs of a
    worker that was killed stop with their records (their SIGTERM as their worker ended), and the
    report, rebuilt as the launching process exits, has them."""
    deadline = time.monotonic() + timeout
    while sweep_dir is not None and sweep_dir.is_dir() and time.monotonic() < deadline:
        if not any(locks.holder(d) for d in sweep_dir.iterdir() if d.is_dir()):
            return
        time.sleep(0.05)


def _import(names: list[str]) -> None:
    """The modules a job imported (matplotlib, TensorBoard, ...), imported by the worker too, so its
    next job's process is forked with them, as a worker that ran its jobs itself kept them: a job
    pays its imports once per worker, not once per job. A module that cannot be imported on its own
    (one a package made up as it loaded) is left to the job."""
    import importlib

    for name in names:
        if name not in sys.modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
