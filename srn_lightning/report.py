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
sweep, see `update_report`), and completely when the sweep ends, fails or is stopped; then the
launching process prints the by-setting table and the report's path.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import io
import json
import logging
import math
import os
import statistics
import time
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from srn_lightning import plots, record
from srn_lightning.config import is_number
from srn_lightning.files import shown, write_atomic

log = logging.getLogger(__name__)

JOB_COLUMNS = ["job", "dir", "overrides", "status", *record.CONFIG_KEYS, "epochs", "steps", "dev_best",
               "test_acc", *record.NORM_KEYS, "fit_seconds", "diverged_step", "error"]
AGGREGATED = ["test_acc", "dev_best", "W_pre_max", "total_pre_max"]
SETTING_KEYS = ["cell", "optimizer", "clip_mode", "clip_val", "length", "lr", "weight_decay"]
CLIP_ORDER = ["none", "norm", "value", "norm_each"]
MISSING = "missing"


# ---- reading the jobs ----------------------------------------------------------------------------

def find_jobs(sweep_dir) -> list[tuple[int, Path]]:
    """(job number, dir) of every job under `sweep_dir`, in job order: the dirs Hydra made, which
    hold `.hydra/overrides.yaml`. A job dir is not searched further (its checkpoints and TensorBoard
    events are most of a sweep's files), nor are hidden dirs (.submitit)."""
    dirs = []
    for parent, subdirs, _ in os.walk(sweep_dir):
        if os.path.isfile(os.path.join(parent, ".hydra", "overrides.yaml")):
            dirs.append(Path(parent))
            subdirs.clear()
        else:
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    return sorted((_job_num(d), d) for d in dirs)


def _job_num(job_dir: Path) -> int:
    """The number Hydra gave the job: the head of its dir name (`<num>_<overrides>`, this project's
    hydra.sweep.subdir), else hydra.job.num in its hydra.yaml (slower to parse)."""
    head = job_dir.name.split("_", 1)[0]
    if head.isdigit():
        return int(head)
    try:
        return int(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra.job.num)
    except Exception:  # no number to be found: after the numbered ones
        return UNNUMBERED


UNNUMBERED = 1 << 30


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def read_job(num: int, job_dir: Path, sweep_dir: Path) -> dict:
    """One row: the job's own metrics.json, plus where it is and what it overrides. Without a
    metrics.json the config keys come from the job's `.hydra/config.yaml`, written before it ran.
    A job whose files cannot be read is a row too, `unreadable` with the reason: one bad job never
    costs the others their report."""
    row = {"job": num, "dir": str(job_dir.relative_to(sweep_dir)), "overrides": "", "_overrides": []}
    try:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        if not isinstance(overrides, (list, type(None))):
            raise ValueError("not a YAML list")
    except (OSError, ValueError, yaml.YAMLError) as err:  # UnicodeDecodeError is a ValueError
        return {**row, "status": UNREADABLE, "error": f"unreadable .hydra/overrides.yaml: {_first_line(err)}"}
    overrides = [str(o) for o in overrides or []]
    row.update(overrides=" ".join(overrides), _overrides=overrides)
    try:
        metrics = check_metrics(record.read_metrics(job_dir))
    except FileNotFoundError:
        metrics = {"status": MISSING}
    except (OSError, ValueError) as err:
        return {**row, "status": UNREADABLE, "error": f"unreadable metrics.json: {_first_line(err)}"}
    if metrics["status"] == MISSING:
        try:
            metrics.update(record.config_summary(OmegaConf.load(job_dir / ".hydra" / "config.yaml")))
        except Exception:  # a config this code cannot read: the row keeps its overrides only
            pass
    row.update(metrics)
    for key in FLOAT32_KEYS:  # as written since metrics.json holds them so; older records too
        if is_number(row.get(key)):
            row[key] = record.float32_number(row[key])
    return row


UNREADABLE = "unreadable"
NUMBERS = ["clip_val", "lr", "weight_decay", "dev_best", "test_acc", *record.NORM_KEYS, "fit_seconds"]
INTEGERS = ["length", "seed", "batch_size", "hidden_size", "epochs", "steps", "diverged_step"]


def check_metrics(metrics: dict) -> dict:
    """`metrics` if its values have the types the report works with; ValueError naming the first
    that does not (a file edited or written by something else)."""
    if metrics["status"] not in record.STATUSES:
        raise ValueError(f"status {metrics['status']!r} is not one of {', '.join(record.STATUSES)}")
    for key in NUMBERS + INTEGERS:
        v = metrics.get(key)
        ok = v is None or (is_number(v) if key in NUMBERS else isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            raise ValueError(f"{key} is {v!r}, not a {'number' if key in NUMBERS else 'whole number'}")
    for key in ("clip_mode", "reduction", "error", "best_checkpoint"):
        if metrics.get(key) is not None and not isinstance(metrics[key], str):
            raise ValueError(f"{key} is {metrics[key]!r}, not text")
    return metrics


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


FLOAT32_KEYS = ("dev_best", "test_acc", *record.NORM_KEYS)


def read_norms(job_dir: Path, column: str = "W_pre") -> tuple[list, list]:
    """(steps, norms) from a job's grad_norms.csv, as far as it is written; a non-finite norm (a
    diverged run) becomes NaN, a gap in the curve. W by default: the recurrent weight whose gradient
    explodes, then vanishes (the total stays up with the output layer's)."""
    try:
        cols = record.read_grad_norms(job_dir / record.CSV_NAME, partial=True)
    except (OSError, ValueError) as err:  # not a CSV this project wrote: no curve for the job
        log.warning("%s: no grad-norm curve (%s)", job_dir / record.CSV_NAME, _first_line(err))
        return [], []
    return cols["step"], [v if math.isfinite(v) else math.nan for v in cols[column]]


# ---- aggregating ---------------------------------------------------------------------------------

def mean_std_n(values) -> tuple[float | None, float | None, int]:
    """Mean, SAMPLE standard deviation (n - 1 in the denominator: the seeds are a sample of all
    seeds) and n, over the finite numbers among `values`; std is None with fewer than two."""
    xs = [float(x) for x in values if is_number(x)]
    mean = statistics.mean(xs) if xs else None
    std = statistics.stdev(xs) if len(xs) > 1 else None
    return mean, std, len(xs)


def varying(rows: list[dict]) -> set[str]:
    """The override keys whose values differ between jobs (or that some jobs lack)."""
    seen: dict[str, set] = {}
    for row in rows:
        for o in row["_overrides"]:
            seen.setdefault(_override_key(o), set()).add(o)
    return {k for k, vals in seen.items()
            if len(vals) > 1 or sum(k in map(_override_key, r["_overrides"]) for r in rows) < len(rows)}


def label(row: dict, keys: set[str], leave_out=()) -> str:
    """The row's overrides of the keys in `keys`, less `leave_out`, as `k=v k=v`."""
    return " ".join(o for o in row["_overrides"]
                    if _override_key(o) in keys and _override_key(o) not in leave_out)


def aggregate(rows: list[dict]) -> list[dict]:
    """A row per setting: the jobs whose varying overrides are the same but for `seed`."""
    keys = varying(rows)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(label(row, keys, leave_out={"seed"}), []).append(row)
    out = []
    for setting, jobs in groups.items():
        statuses = [j["status"] for j in jobs]
        agg = {"setting": setting or "all jobs",
               **{k: jobs[0].get(k) for k in SETTING_KEYS},
               "jobs": len(jobs), "seeds": " ".join(str(j.get("seed", "?")) for j in jobs),
               "status": " ".join(f"{s}:{statuses.count(s)}" for s in dict.fromkeys(statuses))}
        for m in AGGREGATED:
            mean, std, agg[f"{m}_n"] = mean_std_n(j.get(m) for j in jobs)
            agg[f"{m}_mean"], agg[f"{m}_std"] = _digits(mean), _digits(std)
        out.append(agg)
    return out


def _digits(x: float | None, significant: int = 15) -> float | None:
    """A statistic of float32 values to 15 significant digits: the mean of 0.11 and 0.12 is 0.115,
    not float64's 0.11499999999999999; well within the inputs' own 7 digits either way."""
    return None if x is None else float(f"{x:.{significant}g}")


def figure_data(rows: list[dict], sweep_dir: Path) -> dict:
    """What plots.plot_sweep draws: a panel per (length, clip), curves labelled by what else
    varies (the seeds of a setting share a label); accuracy series per clip (and whatever else
    varies but length and seed), one point per length."""
    keys = varying(rows)
    known = [r for r in rows if r.get("length") is not None and r.get("clip_mode") is not None]

    # a column per clip mode, titled with its threshold when the sweep gives it only one; several
    # thresholds of a mode (a threshold sweep, a search) are curves of that column instead
    vals: dict[str, set] = {}
    for r in known:
        vals.setdefault(r["clip_mode"], set()).add(r.get("clip_val"))
    titles = {m: f"clip={m}" + (f" {next(iter(v))}" if len(v) == 1 and None not in v else "")
              for m, v in vals.items()}
    cols = [titles[m] for m in sorted(vals, key=lambda m: (CLIP_ORDER + [m]).index(m))]
    one_val = all(len(v) == 1 for v in vals.values())
    leave_out = {"seed", "length", "clip"} | ({"clip.val"} if one_val else set())
    lengths = sorted({r["length"] for r in known})
    panels: dict = {}
    for r in known:
        steps, norms = read_norms(sweep_dir / r["dir"])
        if steps:
            curve = (label(r, keys, leave_out), steps, norms)
            panels.setdefault((f"length={r['length']}", titles[r["clip_mode"]]), []).append(curve)
    accuracy: dict = {}
    for r in known:
        accuracy.setdefault(label(r, keys, leave_out={"seed", "length"}), {}) \
            .setdefault(r["length"], []).append(r.get("test_acc"))
    accuracy = {
        series: [(f"length={n}", *mean_std_n(by_length[n])) for n in lengths
                 if n in by_length and mean_std_n(by_length[n])[2]]
        for series, by_length in accuracy.items()
    }
    return {"panels": panels, "rows": [f"length={n}" for n in lengths], "cols": cols,
            "accuracy": {s: pts for s, pts in accuracy.items() if pts},
            "x_labels": [f"length={n}" for n in lengths]}


# ---- writing -------------------------------------------------------------------------------------

def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or v == "":
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def _pm(agg: dict, m: str, spec: str) -> str:
    mean, std, n = agg[f"{m}_mean"], agg[f"{m}_std"], agg[f"{m}_n"]
    if mean is None:
        return "-"
    return f"{mean:{spec}}" + ("" if std is None else f" ± {std:{spec}}") + f" (n={n})"


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def setting_table(by_setting: list[dict]) -> list[str]:
    """The by-setting table of summary.md, line by line; also what a sweep prints at its end."""
    lines = [_md_row(["setting", "seeds", "status", "test acc", "dev best", "max W norm (pre)",
                      "max total norm (pre)"]),
             _md_row(["---"] * 7)]
    for a in by_setting:
        lines.append(_md_row([a["setting"], a["seeds"], a["status"], _pm(a, "test_acc", ".3f"),
                              _pm(a, "dev_best", ".3f"), _pm(a, "W_pre_max", ".3g"),
                              _pm(a, "total_pre_max", ".3g")]))
    return lines


def markdown(rows: list[dict], by_setting: list[dict], sweep_dir: Path) -> str:
    statuses = [r["status"] for r in rows]
    keys = varying(rows)
    common = sorted({o for r in rows for o in r["_overrides"] if _override_key(o) not in keys})
    lines = [
        f"# Sweep {sweep_dir.name}", "",
        f"{len(rows)} jobs: " + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses)) + ".",
        f"Every job overrides: `{' '.join(common)}`." if common else "",
        "", "## By setting (over seeds)", "",
        "mean ± std (n): std is the sample standard deviation over the seeds (n - 1 in the "
        "denominator), n the number of seeds the number rests on.", "",
        *setting_table(by_setting),
    ]
    lines += ["", "## Jobs", "",
              _md_row(["job", "overrides", "status", "dev best", "test acc", "W max (pre)",
                       "W last (pre)", "total max (pre)", "total last (pre)", "fit s", "note"]),
              _md_row(["---"] * 11)]
    for r in rows:
        note = r.get("error") or (f"diverged at step {r['diverged_step']}"
                                  if r.get("diverged_step") is not None else "")
        lines.append(_md_row([
            r["job"] if r["job"] != UNNUMBERED else "?", label(r, keys) or r["overrides"],
            r["status"], _fmt(r.get("dev_best"), ".3f"), _fmt(r.get("test_acc"), ".3f"),
            _fmt(r.get("W_pre_max")), _fmt(r.get("W_pre_last")), _fmt(r.get("total_pre_max")),
            _fmt(r.get("total_pre_last")), _fmt(r.get("fit_seconds"), ".1f"), note,
        ]))
    lines += ["", "![pre-clip gradient norm of W and test accuracy](sweep.png)", ""]
    return "\n".join(lines)


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
    with _locked(sweep_dir):
        return _build(sweep_dir, force)[0]


def _build(sweep_dir: Path, force: bool) -> tuple[list[Path], list[dict], list[dict]]:
    """The report's files, the by-setting rows and the job rows; called under the lock."""
    rows = [read_job(num, d, sweep_dir) for num, d in find_jobs(sweep_dir)]
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no job dirs (dirs with .hydra/overrides.yaml)")
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in JOB_COLUMNS and k[0] != "_"))
    by_setting = aggregate(rows)
    agg_columns = ["setting", *SETTING_KEYS, "jobs", "seeds", "status",
                   *[f"{m}_{s}" for m in AGGREGATED for s in ("mean", "std", "n")]]
    out = [sweep_dir / n for n in ("summary.csv", "summary_by_setting.csv", "summary.md",
                                   "sweep.png", "sweep.pdf")]
    table = _csv_text(rows, JOB_COLUMNS + extra)
    # current: the same table, and the figure there (a stop can come between the two)
    if not force and out[0].exists() and out[0].read_text() == table and out[3].exists() and out[4].exists():
        return out, by_setting, rows
    write_atomic(out[0], table)
    write_atomic(out[1], _csv_text(by_setting, agg_columns))
    write_atomic(out[2], markdown(rows, by_setting, sweep_dir))
    data = figure_data(rows, sweep_dir)
    if data["rows"]:
        plots.plot_sweep(**data, out_stem=sweep_dir / "sweep", title=f"sweep {sweep_dir.name}")
    return out, by_setting, rows


# ---- while a sweep runs: a report that keeps up without costing the sweep its time ---------------

# After a job the report is rebuilt only when the last rebuild ended long enough ago: at least
# MIN_INTERVAL seconds, and at least (1 - REBUILD_SHARE) / REBUILD_SHARE times (39x) as long as that
# rebuild took. A rebuild reads every job, so its cost grows with the sweep; rebuilt after every
# job, the report's total would grow with the square of the sweep's size. Spaced this way the
# rebuilds while a sweep runs take at most about REBUILD_SHARE of its time, at any size; the
# complete report follows when the sweep ends.
MIN_INTERVAL = 5.0
REBUILD_SHARE = 0.025
STAMP_NAME = ".report.stamp"  # when the last rebuild ended and how long it took: shared by the
                              # processes of a sweep (joblib workers, Slurm jobs)


def update_report(sweep_dir, clock=time.time) -> bool:
    """After a job: rebuild the report if it is due (see MIN_INTERVAL); returns whether it did.
    `clock` (seconds) is for the benchmark, which simulates the jobs' time."""
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir):
        ended, seconds = _read_stamp(sweep_dir)
        wait = max(MIN_INTERVAL, seconds * (1 - REBUILD_SHARE) / REBUILD_SHARE)
        if ended is not None and clock() - ended < wait:
            return False
        start = time.perf_counter()
        _build(sweep_dir, force=True)
        _write_stamp(sweep_dir, clock(), time.perf_counter() - start)
        return True


def _read_stamp(sweep_dir: Path) -> tuple[float | None, float]:
    try:
        stamp = json.loads((sweep_dir / STAMP_NAME).read_text())
        return float(stamp["ended"]), float(stamp["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, 0.0


def _write_stamp(sweep_dir: Path, ended: float, seconds: float) -> None:
    write_atomic(sweep_dir / STAMP_NAME, json.dumps({"ended": ended, "seconds": seconds}) + "\n")


class SweepReport(Callback):
    """Hydra callback: the sweep report while the sweep runs and complete at its end.

    `on_job_end` runs where the job ran: in the launching process (basic launcher), in a joblib
    worker, or in the submitit job on the cluster node, so the report is written from there, into
    the shared sweep dir, under a lock, when it is due (`update_report`). `on_multirun_end` runs in
    the launching process, and only when every job succeeded; a sweep with a failed job, or one
    stopped half-way, gets its complete report when the launching process exits. The launching
    process prints the by-setting table and the report's path once, after the complete report. A
    report that cannot be written is logged, never a failed job."""

    clock = staticmethod(time.time)  # when a rebuild is due (benchmarks/report.py simulates it)

    def __init__(self) -> None:
        self._ended = False

    def on_multirun_start(self, config, **kwargs) -> None:
        # A sweep stopped by Ctrl-C or a signal, or with a failed job, skips on_multirun_end: the
        # launching process still completes the report on its way out.
        atexit.register(self._end, self._sweep_dir(config))

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


def not_completed(rows: list[dict]) -> list[str]:
    """A line per job that did not run to its end (a diverged job did: divergence is a result)."""
    out, keys = [], varying(rows)
    for r in rows:
        if r["status"] in ("completed", "diverged"):
            continue
        how = r["status"] + (f" by {r['signal']}" if r.get("signal") else "") + (
            f" during {r['phase']}" if r.get("phase") else "")
        out.append(f"job {r['job']} ({label(r, keys) or r['overrides'] or r['dir']}): {how}"
                   + (f": {r['error']}" if r.get("error") else "")
                   + (f"; {r['resume']}" if r.get("resume") else ""))
    return out


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
        parser.error(str(err))
    print(paths[2].read_text())
    print("written: " + ", ".join(str(p) for p in paths if p.exists()))


if __name__ == "__main__":
    main()
