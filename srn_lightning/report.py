"""The sweep report: every job of a multirun in two tables and one figure, in the sweep dir.

    python -m srn_lightning.report SWEEP_DIR

writes into SWEEP_DIR
  summary.csv             a row per job: overrides, status, config keys, dev best, test acc,
                          max and last pre-clip gradient norms, fit seconds, error
  summary_by_setting.csv  a row per setting (the jobs that differ only in `seed`): mean, std and n
                          of test acc, dev best and the max pre-clip norms
  summary.md              both tables, readable
  sweep.png, sweep.pdf    pre-clip gradient norm of W of every job, a panel per (length, clip), and
                          test accuracy per clip and length with error bars over seeds

A job is a dir holding `.hydra/overrides.yaml`; its row comes from its `metrics.json`, or says
`missing` when there is none (still running, or killed before it could write one). The
`SweepReport` Hydra callback (registered in conf/config.yaml) brings the report up to date after a
job when it is due (every few seconds at most, spaced so that the rebuilds take a small share of the
sweep, see `update_report`), completely after the job that ends last, and when the sweep ends, fails
or is stopped (unless it is current); then the launching process prints the by-setting table and
the report's path.

Its parts: report_jobs.py reads the jobs, report_summary.py summarises them (statistics, tables,
figure data); here the report is built, kept up to date while a sweep runs, and rebuilt from the CLI.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from srn_lightning import plots
from srn_lightning.files import shown, write_atomic
from srn_lightning.record import KEPT, METRICS_NAME, csv_text, read_metrics
from srn_lightning.resume import MULTIRUN_NAME
from srn_lightning.report_jobs import find_jobs, read_job
from srn_lightning.report_summary import (AGGREGATE_COLUMNS, JOB_COLUMNS, aggregate, figure_data, markdown,
                                          not_completed, setting_table)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _locked(sweep_dir: Path):
    """One report writer at a time: jobs of a parallel launcher end together, and with the lock the
    last writer has seen every metrics.json written before it. Each file is also replaced
    atomically, so a reader never sees half of one. Without POSIX locks, the atomic writes alone."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(sweep_dir / ".report.lock", "w") as f:
        with contextlib.suppress(OSError):  # a file system without locks
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def write_report(sweep_dir, force: bool = True) -> list[Path]:
    """(Re)build the report of `sweep_dir` from its job dirs; returns its files. Unless `force`,
    a report whose job table is already current is left as it is (drawing is the slow part)."""
    sweep_dir = Path(sweep_dir)
    if not find_jobs(sweep_dir):  # before the lock: a dir that is not a sweep gets no file
        raise FileNotFoundError(f"{sweep_dir}: no job dirs (dirs with .hydra/overrides.yaml)")
    with _locked(sweep_dir):
        return _build(sweep_dir, force)[0]


def _build(sweep_dir: Path, force: bool) -> tuple[list[Path], list[dict], list[dict]]:
    """The report's files, the by-setting rows and the job rows; called under the lock."""
    rows = [read_job(num, d, sweep_dir) for num, d in find_jobs(sweep_dir)]
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no job dirs (dirs with .hydra/overrides.yaml)")
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in JOB_COLUMNS and k[0] != "_"))
    by_setting = aggregate(rows)
    out = [sweep_dir / n for n in ("summary.csv", "summary_by_setting.csv", "summary.md",
                                   "sweep.png", "sweep.pdf")]
    table = csv_text(rows, JOB_COLUMNS + extra)
    # current: the same table, and the figure there (a stop can come between the two)
    if (not force and out[0].exists() and out[0].read_bytes() == table.encode() and out[3].exists()
            and out[4].exists()):
        return out, by_setting, rows
    write_atomic(out[0], table)
    write_atomic(out[1], csv_text(by_setting, AGGREGATE_COLUMNS))
    write_atomic(out[2], markdown(rows, by_setting, sweep_dir))
    data = figure_data(rows)
    if data["rows"]:
        plots.plot_sweep(**data, out_stem=sweep_dir / "sweep", title=f"sweep {sweep_dir.name}")
    return out, by_setting, rows


# ---- while a sweep runs: a report that keeps up without costing the sweep its time ---------------

# After a job the report is rebuilt only when the last rebuild ended long enough ago: at least
# MIN_INTERVAL seconds, and at least (1 - REBUILD_SHARE) / REBUILD_SHARE times (39x) as long as that
# rebuild took. A rebuild reads every job, so its cost grows with the sweep; rebuilt after every
# job, the report's total would grow with the square of the sweep's size. Spaced this way the
# rebuilds while a sweep runs take at most about REBUILD_SHARE of its time, at any size; the
# complete report follows when the sweep ends: built by the job that ends last, at once (see
# SWEEP_JOBS_ENV), else by the launching process.
MIN_INTERVAL = 5.0
REBUILD_SHARE = 0.025
# The sweep's start counts as a rebuild that took START_SECONDS (about what a sweep's first rebuild
# takes, matplotlib's import included: 0.46 s, benchmarks/report.py), so the first one keeps to the
# same share: the first job to end after the sweep has run 15.6 s rebuilds it. A shorter sweep gets
# only its complete report.
START_SECONDS = 0.4
STAMP_NAME = ".report.stamp"  # when the last rebuild ended and how long it took: shared by the
                              # processes of a sweep (joblib workers, Slurm jobs)
# How many job dirs the sweep dir holds once the sweep has ended (its first job's number plus its
# jobs), in every job's environment (the project's sweeper sets it): the job whose end leaves every
# one of them with its record completes the report at once, where it ran, and the launching process
# then finds it current.
SWEEP_JOBS_ENV = "SRN_SWEEP_JOBS"


def update_report(sweep_dir, clock=time.time) -> bool:
    """After a job: rebuild the report if it is due (see MIN_INTERVAL), or if every job of the sweep
    has ended (`all_ended`); returns whether it did. `clock` (seconds) is for the benchmark, which
    simulates the jobs' time."""
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir):
        ended, seconds, was_complete = _read_stamp(sweep_dir)
        wait = max(MIN_INTERVAL, seconds * (1 - REBUILD_SHARE) / REBUILD_SHARE)
        complete = not was_complete and all_ended(sweep_dir)  # once: the jobs that end after it are kept ones
        if ended is not None and clock() - ended < wait and not complete:
            return False
        start = time.perf_counter()
        _build(sweep_dir, force=not complete)  # complete: current already if two jobs ended at once
        _write_stamp(sweep_dir, clock(), time.perf_counter() - start, was_complete or complete)
        return True


def all_ended(sweep_dir: Path) -> bool:
    """Whether every job of the sweep (SWEEP_JOBS_ENV of them) has its dir and has ended: its record
    completed or diverged (a continued sweep keeps it as it is), or failed or cancelled since the
    sweep started (its `multirun.yaml` written; an earlier one is run again). An interrupted record is
    no end: its job runs again (requeued, or the sweep continued)."""
    expected = int(os.environ.get(SWEEP_JOBS_ENV, "0"))
    if not expected:
        return False
    jobs = find_jobs(sweep_dir)
    try:
        started = (sweep_dir / MULTIRUN_NAME).stat().st_mtime
    except OSError:
        return False
    return len(jobs) >= expected and all(_ended(d, started) for _, d in jobs)


def _ended(job_dir: Path, started: float) -> bool:
    try:
        status = read_metrics(job_dir)["status"]
        written = (job_dir / METRICS_NAME).stat().st_mtime
    except (OSError, ValueError):
        return False
    return status in KEPT or (status in ("failed", "cancelled") and written >= started)


def _read_stamp(sweep_dir: Path) -> tuple[float | None, float, bool]:
    """When the last rebuild ended, how long it took, and whether it was the complete report."""
    try:
        stamp = json.loads((sweep_dir / STAMP_NAME).read_text())
        return float(stamp["ended"]), float(stamp["seconds"]), stamp.get("complete") is True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, 0.0, False


def _write_stamp(sweep_dir: Path, ended: float, seconds: float, complete: bool = False) -> None:
    write_atomic(sweep_dir / STAMP_NAME,
                 json.dumps({"ended": ended, "seconds": seconds, "complete": complete}) + "\n")


class SweepReport(Callback):
    """Hydra callback: the sweep report while the sweep runs and complete at its end.

    `on_job_end` runs where the job ran: in the launching process (basic launcher), in a joblib
    worker, or in the submitit job on the cluster node, so the report is written from there, into
    the shared sweep dir, under a lock, when it is due (`update_report`), and completely after the
    job that ends last. `on_multirun_end` runs in the launching process, and only when every job
    succeeded: it completes the report unless it is current; a sweep with a failed job, or one
    stopped half-way, gets its complete report when the launching process exits. The launching
    process prints the by-setting table and the report's path once, after the complete report. A
    report that cannot be written is logged, never a failed job."""

    clock = staticmethod(time.time)  # when a rebuild is due (benchmarks/report.py simulates it)

    def __init__(self) -> None:
        self._ended = False

    def on_multirun_start(self, config, **kwargs) -> None:
        # A sweep stopped by Ctrl-C or a signal, or with a failed job, skips on_multirun_end: the
        # launching process still completes the report on its way out.
        sweep_dir = self._sweep_dir(config)
        atexit.register(self._end, sweep_dir)
        os.environ.pop(SWEEP_JOBS_ENV, None)  # an earlier sweep's in this process: the sweeper sets this one's
        try:  # its config checked (preflight.CheckConfig runs first), so the dir is the sweep's
            sweep_dir.mkdir(parents=True, exist_ok=True)
            with _locked(sweep_dir):
                _write_stamp(sweep_dir, self.clock(), START_SECONDS)
        except OSError as err:  # no pacing stamp: the first job's end rebuilds at once
            log.warning("sweep report: %s not written (%s)", sweep_dir / STAMP_NAME, err)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:  # a single run has no sweep to report on
            sweep_dir = self._sweep_dir(config)
            try:
                update_report(sweep_dir, self.clock)
            except FileNotFoundError:  # the job's dir is gone already: nothing to report on
                pass
            except Exception:
                log.exception("sweep report not written in %s", sweep_dir)

    def on_multirun_end(self, config, **kwargs) -> None:
        self._end(self._sweep_dir(config))

    def _end(self, sweep_dir: Path) -> None:
        """The complete report (redrawn only if the last one is not), and the sweep's answer."""
        if self._ended:
            return
        self._ended = True
        try:
            with _locked(sweep_dir):
                paths, by_setting, rows = _build(sweep_dir, force=False)
        except FileNotFoundError as err:  # stopped before its first job
            log.info("no sweep report: %s", err)
            return
        except Exception:
            log.exception("sweep report not written in %s", sweep_dir)
            return
        # printed, not logged: the launching process's log may still be a job's train.log
        print("\n".join(["", *setting_table(by_setting), "", f"sweep report: {shown(paths[2])}",
                         *not_completed(rows)]), flush=True)

    @staticmethod
    def _sweep_dir(config) -> Path:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_absolute():  # relative to where the sweep was launched
            sweep_dir = Path(config.hydra.runtime.cwd) / sweep_dir
        return sweep_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m srn_lightning.report",
        description="(Re)build the report of a sweep dir, finished or not: summary.csv, "
        "summary_by_setting.csv, summary.md, sweep.png, sweep.pdf.",
    )
    parser.add_argument("sweep_dir", help="a multirun's dir, e.g. outputs/sweeps/<date>/<time>")
    args = parser.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        parser.error(f"{args.sweep_dir}: not a directory")
    try:
        paths = write_report(args.sweep_dir)
    except FileNotFoundError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except OSError as err:  # a dir it cannot write: one line
        parser.exit(1, f"{parser.prog}: error: {args.sweep_dir}: the report cannot be written "
                       f"({err.strerror or err}: {err.filename or ''})\n")
    print(paths[2].read_text())
    print("written: " + ", ".join(str(p) for p in paths if p.exists()))


if __name__ == "__main__":
    main()
