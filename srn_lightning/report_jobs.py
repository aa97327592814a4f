"""A sweep's jobs as the report reads them: find the job dirs, read each job's record into a row
(one bad job is a row that says so, never a lost report), and its grad-norm curve.

A job is a dir holding `.hydra/overrides.yaml`; its row comes from its `metrics.json`, or says
`missing` when there is none (still running, or killed before it could write one).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import OmegaConf

from srn_lightning import record
from srn_lightning.config import is_number, record_type
from srn_lightning.errors import first_line

MISSING = "missing"


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


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def read_job(num: int, job_dir: Path, sweep_dir: Path) -> dict:
    """One row: the job's own metrics.json, plus where it is and what it overrides. Without a
    metrics.json the config keys come from the job's `.hydra/config.yaml`, written before it ran.
    A job whose files cannot be read is a row too, `unreadable` with the reason: one bad job never
    costs the others their report."""
    row = {"job": num, "dir": str(job_dir.relative_to(sweep_dir)), "overrides": "", "_overrides": []}
    try:
        overrides = record.read_overrides(job_dir)
    except (OSError, ValueError) as err:
        return {**row, "status": UNREADABLE, "error": f"unreadable .hydra/overrides.yaml: {first_line(err)}"}
    row.update(overrides=" ".join(overrides), _overrides=overrides)
    try:
        metrics = check_metrics(record.read_metrics(job_dir))
    except FileNotFoundError:
        metrics = {"status": MISSING}
    except (OSError, ValueError) as err:
        return {**row, "status": UNREADABLE, "error": f"unreadable metrics.json: {first_line(err)}"}
    if metrics["status"] == MISSING:
        try:
            metrics.update(record.config_summary(OmegaConf.load(job_dir / ".hydra" / "config.yaml")))
        except Exception:  # a config this code cannot read: the row keeps its overrides only
            pass
    row.update(metrics)
    for key in FLOAT32_KEYS:  # as written since metrics.json holds them so; older records too
        if is_number(row.get(key)):
            row[key] = record.float32_number(row[key])
    try:  # the W curve of the figure: a job whose CSV is not one a run writes is unreadable
        row["_curve"] = read_norms(job_dir)
    except (OSError, ValueError) as err:
        return {**row, "status": UNREADABLE, "error": f"unreadable {record.CSV_NAME}: {first_line(err)}",
                "_curve": ([], [])}
    return row


UNREADABLE = "unreadable"
NUMBERS = [*(k for k in record.CONFIG_KEYS if record_type(k) is float), "dev_best", "test_acc",
           *record.NORM_KEYS, "fit_seconds"]
INTEGERS = [*(k for k in record.CONFIG_KEYS if record_type(k) is int), "epochs", "steps", "diverged_step"]
TEXTS = [*(k for k in record.CONFIG_KEYS if record_type(k) is str), "error", "best_checkpoint"]


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
    for key in TEXTS:
        if metrics.get(key) is not None and not isinstance(metrics[key], str):
            raise ValueError(f"{key} is {metrics[key]!r}, not text")
    return metrics


FLOAT32_KEYS = ("dev_best", "test_acc", *record.NORM_KEYS)


def read_norms(job_dir: Path, column: str = "W_pre") -> tuple[list, list]:
    """(steps, norms) from a job's grad_norms.csv, as far as it is written; a non-finite norm (a
    diverged run) becomes NaN, a gap in the curve. W by default: the recurrent weight whose gradient
    explodes, then vanishes (the total stays up with the output layer's). Raises ValueError for a
    CSV that is not one a run writes."""
    cols = record.read_grad_norms(job_dir / record.CSV_NAME, partial=True)
    return cols["step"], [v if math.isfinite(v) else math.nan for v in cols[column]]
