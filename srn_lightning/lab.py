"""The lab from Python, for notebooks and scripts: run one experiment, or read a finished run or
sweep, as objects.

    from srn_lightning import lab

    book = lab.run(clip="none", run_dir="runs/book")       # the book's run, in a dir of your choice
    book.metrics["test_acc"]                               # metrics.json
    book.steps["W_pre"]                                    # grad_norms.csv, a numpy array a column
    book.frame()                                           # the same as a pandas.DataFrame
    book.figures["grad_norms"]                             # the PNG's path
    lab.run("clip=norm_each", "trainer.max_epochs=20")     # the command line's words work too
    lab.run(clip="norm", trainer__max_epochs=20)           # `__` for the dots of a nested key
    lab.load("runs/book")                                  # a finished run dir: the same Run
    lab.load("outputs/sweeps/2026-11-30/...")              # a sweep dir: a Sweep of its jobs

`run` does what `python -m srn_lightning.train` does for one run, in this process: the same config
(composed by Hydra from srn_lightning/conf/), the same checks before anything is created (a bad
value is a `UserError` whose message is the command line's one line), the same lock on the run dir,
the same `.hydra/` files, `train.log`, console set-up and torch threads, and the same record of a
failed or interrupted run. Its files are the command line's: a run's result is what it left on
disk, read back by `load` (what a later session reads too).
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from srn_lightning import record
from srn_lightning.errors import UserError

LOG_NAME = "train.log"  # what Hydra calls the job's log: `python -m srn_lightning.train` is job "train"
FIGURES = {"grad_norms": record.FIGURE_STEM, "grad_time": record.GRAD_TIME_STEM}


@dataclass
class Run:
    """A run as it lies on disk. `metrics`: metrics.json (`{"status": "missing"}` while it has none);
    `steps`: grad_norms.csv as {column: numpy array}, a row per optimizer step; `grad_time`:
    grad_time.csv the same way (None without one); `figures`: {name: PNG path} of the figures it
    has; `overrides`: what it was run with, as on the command line."""

    run_dir: Path
    metrics: dict
    steps: dict
    grad_time: dict | None = None
    figures: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)

    def frame(self):
        """The per-step columns (`steps`) as a pandas.DataFrame, indexed by step."""
        return _frame(self.steps, "step")

    def grad_time_frame(self):
        """grad_time.csv as a pandas.DataFrame, indexed by step."""
        if self.grad_time is None:
            raise ValueError(f"{self.run_dir}: no grad_time.csv (the run had grad_time=false)")
        return _frame(self.grad_time, "step")


@dataclass
class Sweep:
    """A sweep dir: `runs`, a Run per job in job order; `jobs`, a row per job as summary.csv has it
    (overrides, status, config keys, results); `by_setting`, a row per setting over its seeds as
    summary_by_setting.csv has it; `figure`, the report's sweep.png (None until it is drawn)."""

    sweep_dir: Path
    runs: list
    jobs: list
    by_setting: list
    figure: Path | None = None

    def frame(self):
        """The jobs table (`jobs`) as a pandas.DataFrame, indexed by job number."""
        return _frame({k: [row.get(k) for row in self.jobs] for k in self.jobs[0]}, "job")


def _frame(columns: dict, index: str):
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("a DataFrame needs pandas: pip install pandas (the arrays are in "
                          ".steps, .grad_time and .jobs without it)") from None
    return pd.DataFrame(columns).set_index(index)


# ---- running -------------------------------------------------------------------------------------

def as_overrides(keys: dict) -> list[str]:
    """Keyword arguments as command-line overrides: `clip="norm"` -> `clip=norm`,
    `trainer__max_epochs=3` -> `trainer.max_epochs=3`, None -> null, True -> true."""
    def value(v) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(value(x) for x in v) + "]"
        if isinstance(v, float) and math.isfinite(v):
            return repr(v)
        return str(v)

    return [f"{k.replace('__', '.')}={value(v)}" for k, v in keys.items()]


def compose(overrides: list[str]):
    """The run's config with its `hydra` node, as the command line composes it; a config error is
    a UserError with the command line's one line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from srn_lightning.config import CONFIG_DIR
    from srn_lightning.train.command import explain

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        line = explain(err)
        if line is None:
            raise
        raise UserError(line) from None


def check(cfg, run_dir: Path) -> None:
    """The checks the command line makes before it creates anything (preflight.CheckConfig's, in
    its order), then the run dir's lock, held by this process until `release`."""
    from srn_lightning import locks, preflight

    preflight.check_run_dir(run_dir, cfg.resume)
    preflight.check_job(cfg, run_dir)
    locks.hold(run_dir)


def run(*overrides: str, run_dir=None, **keys) -> Run:
    """One run of the experiment, as `python -m srn_lightning.train *overrides` runs it, in
    `run_dir` (default: the command line's own, outputs/runs/<date>/<time>_<its keys>). Overrides
    are the command line's strings (`"clip=norm"`, `"+trainer.max_steps=10"`) or keywords
    (`clip="norm"`, `trainer__max_epochs=3`). `resume=RUN_DIR` goes on with an interrupted run in
    its own dir. Returns the Run it left; raises UserError (one line) for a bad config or run dir,
    and, for a run that failed, `errors.RunFailed` (its `__cause__`: what made it fail) once
    metrics.json records it with every number measured before. Interrupted (the
    notebook's stop button, Ctrl-C, SIGTERM), a run writes its record and raises SystemExit with
    the line that says how to go on (`run(resume=RUN_DIR)` does too).

    Example::

        book = run(clip="none", run_dir="runs/book")
        book.metrics["W_pre_max"], book.steps["W_pre"][:40]
    """
    from omegaconf import open_dict

    from srn_lightning.resume import quote, resume_argv

    args = resume_argv([*overrides, *as_overrides(keys)])  # resume=: the run's own config and dir
    if run_dir is not None:
        if any(a.startswith("resume=") and a != "resume=null" for a in args):
            raise UserError(f"run_dir={run_dir}: not allowed with resume=; a resumed run goes on in its own dir")
        args.append(f"hydra.run.dir={quote(Path(run_dir).absolute())}")
    cfg = compose(args)
    run_dir = Path(cfg.hydra.run.dir).absolute()
    check(cfg, run_dir)
    try:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
        task_cfg = copy.deepcopy(cfg)
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        _save_hydra_files(cfg, task_cfg, run_dir)
        with _job_logging(cfg, run_dir):
            _job(task_cfg, cfg.hydra, run_dir)
    finally:
        from srn_lightning import locks

        locks.release(run_dir)
    return load_run(run_dir)


def _save_hydra_files(cfg, task_cfg, run_dir: Path) -> None:
    """`.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml`, as Hydra writes them for a run."""
    from omegaconf import OmegaConf

    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    for name, node in (("config.yaml", task_cfg), ("hydra.yaml", {"hydra": cfg.hydra}),
                       ("overrides.yaml", cfg.hydra.overrides.task)):
        with open(hydra_dir / name, "w", encoding="utf-8") as f:
            f.write(OmegaConf.to_yaml(node))


# Loggers that Lightning gives a console handler of their own (and cuts off from the root) when it
# is imported before the root logger has handlers, as in a notebook; the command line's Hydra sets
# up the root first, so there they log through the root's handlers.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class _job_logging:
    """For the run, what Hydra's job logging sets up for the command line: the root logger at INFO
    with two handlers in Hydra's format, the console (stdout) and the run's train.log, and
    Lightning's loggers logging through them; the loggers as they were afterwards."""

    def __init__(self, cfg, run_dir: Path) -> None:
        fmt = cfg.hydra.job_logging.formatters.simple.format
        self.handlers = [logging.StreamHandler(sys.stdout),
                         logging.FileHandler(run_dir / LOG_NAME)]
        for h in self.handlers:
            h.setFormatter(logging.Formatter(fmt))

    def __enter__(self):
        root = logging.getLogger()
        self.level = root.level
        root.setLevel(logging.INFO)
        for h in self.handlers:
            root.addHandler(h)
        self.lightning = {}
        for name in LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            self.lightning[name] = (logger.handlers[:], logger.propagate)
            logger.handlers.clear()
            logger.propagate = True
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        for h in self.handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(self.level)
        for name, (handlers, propagate) in self.lightning.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate


def _job(cfg, hydra_cfg, run_dir: Path) -> None:
    """What the command line's job does (train.command.main) between Hydra's set-up and its end; its
    checks ran in `check`."""
    from srn_lightning import console, interrupts, train
    from srn_lightning.train.command import record_failure

    log = logging.getLogger(train.__name__)
    with interrupts.Phases():
        try:
            console.setup_process(cfg, hydra_cfg)
            train.run(cfg, run_dir, checked=True)
        except interrupts.Interrupted as stop:
            train.stop_interrupted(cfg, None, run_dir, stop)
        except Exception as err:
            reason = record_failure(cfg, run_dir, err)
            log.error("job failed (overrides: %s): %s", " ".join(hydra_cfg.overrides.task), reason)
            raise


# ---- reading -------------------------------------------------------------------------------------

def load(path) -> Run | Sweep:
    """A finished (or stopped) run dir as a Run, or a sweep dir as a Sweep."""
    path = Path(path)
    if (path / ".hydra" / "overrides.yaml").is_file():
        return load_run(path)
    if path.is_dir():
        return load_sweep(path)
    raise FileNotFoundError(f"{path}: no such run or sweep dir")


def load_run(run_dir) -> Run:
    """What a run left in `run_dir`, as far as it got."""
    import numpy as np
    import yaml

    run_dir = Path(run_dir)
    try:
        metrics = record.read_metrics(run_dir)
    except FileNotFoundError:
        metrics = {"status": "missing"}
    steps = record.read_grad_norms(run_dir / record.CSV_NAME, partial=True)
    grad_time = read_columns(run_dir / record.GRAD_TIME_CSV)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    return Run(
        run_dir=run_dir, metrics=metrics, steps={k: np.asarray(v) for k, v in steps.items()},
        grad_time=grad_time,
        figures={name: run_dir / f"{stem}.png" for name, stem in FIGURES.items()
                 if (run_dir / f"{stem}.png").is_file()},
        overrides=[str(o) for o in overrides or []],
    )


def read_columns(path) -> dict | None:
    """A CSV of numbers with a header, as {column: numpy array} (`step`, `epoch` as integers);
    None when there is no such file."""
    import numpy as np

    try:
        with Path(path).open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [[float(x) for x in row] for row in reader if row]
    except FileNotFoundError:
        return None
    if header is None:
        return None
    table = np.array(rows, dtype=float).reshape(len(rows), len(header))
    return {c: table[:, i].astype(int) if c in ("step", "epoch") else table[:, i]
            for i, c in enumerate(header)}


def load_sweep(sweep_dir) -> Sweep:
    """Every job of a sweep dir (dirs with .hydra/overrides.yaml, in job order) as Runs, with the
    report's tables as rows; nothing is written (`python -m srn_lightning.report` rebuilds the
    report)."""
    from srn_lightning.report_jobs import find_jobs, read_job
    from srn_lightning.report_summary import aggregate

    sweep_dir = Path(sweep_dir)
    found = find_jobs(sweep_dir)
    if not found:
        raise FileNotFoundError(f"{sweep_dir}: no job dirs (dirs with .hydra/overrides.yaml)")
    rows = [read_job(num, d, sweep_dir) for num, d in found]
    figure = sweep_dir / "sweep.png"
    return Sweep(
        sweep_dir=sweep_dir, runs=[load_run(d) for _, d in found],
        jobs=[{k: v for k, v in row.items() if not k.startswith("_")} for row in rows],
        by_setting=aggregate(rows), figure=figure if figure.is_file() else None,
    )
