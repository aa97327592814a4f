"""Train the book's SRN from a Hydra config: build, fit, test the best-on-dev checkpoint, record,
and end with the run's answer on the console.

    python -m srn_lightning.train clip=none
    python -m srn_lightning.train -m clip=norm,value,none length=10,20
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import os
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import hydra
from omegaconf import DictConfig

from srn_lightning import answer, interrupts, locks, record
from srn_lightning.config import CONFIG_DIR, check_trainer_keys, explain, validate
from srn_lightning.errors import UserError
from srn_lightning.files import naming
from srn_lightning.resume import check_checkpoint, resume_argv

log = logging.getLogger(__name__)


class Built(NamedTuple):
    """What a run trains with, built from its config."""

    trainer: Any
    module: Any
    datamodule: Any
    monitor: Any  # GradNormMonitor
    flow: Any  # GradFlowMonitor, None when grad_time is off
    best: Any  # the ModelCheckpoint that keeps the best epoch on dev


def run(cfg: DictConfig, run_dir, callbacks=()) -> dict:
    """One run in `run_dir`: build, make the data files, fit, test the best-on-dev checkpoint,
    draw, record, log its answer (`answer.lines`). Returns the metrics it also writes to `run_dir/metrics.json`. `callbacks` are
    added to the project's own (handy for notebooks and tests).

    status "completed"; "diverged" (NaN/Inf: a result, with the step; the best checkpoint before it
    is tested); "interrupted" (a signal in any phase, `interrupts.STOPS`: metrics.json says which, last.ckpt holds
    the last completed epoch; raises SystemExit after writing metrics.json).
    """
    validate(cfg)
    check_trainer_keys(cfg.trainer)
    from lightning.pytorch import seed_everything

    run_dir = Path(run_dir)
    built, known = None, {}  # known: what the run has measured so far (its fit's outcome, best)
    with interrupts.Phases() as phases:
        try:
            seed_everything(cfg.seed, workers=True, verbose=False)
            built = build(cfg, run_dir, callbacks)
            ckpt = resume_checkpoint(cfg.resume)
            if ckpt is not None:
                check_checkpoint(ckpt, built.module, run_config(cfg), run_dir)  # when called directly too
            phases.enter("data")
            built.datamodule.prepare_data()
            phases.enter("fit")
            outcome = fit(built, ckpt)
            known.update(outcome)
            if outcome["status"] == "interrupted":
                raise interrupts.Interrupted("fit", phases.signum or signal.SIGINT)
            phases.check()  # a SIGTERM that came as the fit ended
            return finish(cfg, built, run_dir, outcome, phases, known)
        except interrupts.Interrupted as stop:
            stop_interrupted(cfg, built, run_dir, stop, known)
        except Exception as err:
            if built is None:  # nothing measured: the caller records it (main: record_failure)
                raise
            stop_failed(cfg, built, run_dir, phases.phase, err, known)


def resume_checkpoint(resume) -> str | None:
    """The checkpoint a run resumes from: `resume` when it names one; None for a fresh run, or for
    a run dir that has none yet (a run stopped before its first epoch ended starts over in it)."""
    return resume if resume is not None and Path(resume).is_file() else None


def run_config(cfg: DictConfig) -> dict:
    """What a checkpoint must have been trained with to be resumed by this run."""
    return {**record.config_summary(cfg), "input_size": cfg.model.input_size}


def finish(cfg: DictConfig, built: Built, run_dir: Path, outcome: dict, phases, known: dict) -> dict:
    """After the fit: test the best checkpoint, draw, record. `known` gets the test's numbers."""
    phases.enter("test")
    known.update(evaluate_best(built))
    metrics = measured(cfg, built, known)
    phases.enter("figures")
    draw(cfg, built, run_dir)
    with naming(run_dir / "tb"):  # TensorBoard's files: an error names their dir
        built.trainer.logger.log_hyperparams(record.hparams(cfg), record.hparam_metrics(metrics))
    phases.enter("record")
    with interrupts.deferred():  # a signal now waits until the record is whole, then is acted on
        # the figure and HParams events written after test: flushed and closed here, not left to
        # the process's exit ("success" also rewrites the logger's hparams.yaml)
        with naming(run_dir / "tb"):
            built.trainer.logger.finalize("success")
        record.write_metrics(run_dir, metrics)
    for line in answer.lines(metrics, columns(built.monitor), run_dir):  # console and train.log
        log.info(line)
    return metrics


def measured(cfg: DictConfig, built: Built, known: dict) -> dict:
    """The run's record as far as it has measured: the fit's outcome and seconds once it has
    ended (`known`), the best on dev so far, the test accuracy once tested, the norms of every
    step done; None for what is not measured yet."""
    best = built.best
    dev_best = None if best.best_model_score is None else float(best.best_model_score)
    found = {"status": "completed", "fit_seconds": None, "dev_best": dev_best, "test_acc": None,
             "best_checkpoint": Path(best.best_model_path).name if best.best_model_path else None}
    return record.finished_metrics(
        cfg=cfg, **{**found, **known}, epochs=epochs_done(built.trainer),
        steps=built.trainer.global_step, columns=columns(built.monitor),
        grad_time=built.flow and columns(built.flow),
    )


def epochs_done(trainer) -> int:
    """The epochs trained to their end: all their steps done and their end (and last.ckpt)
    reached. An epoch cut short (by +trainer.max_steps, an interrupt, divergence) is not one;
    `steps` says how far it went."""
    per_epoch = trainer.num_training_batches
    if not 0 < per_epoch < float("inf"):  # no training data loaded (stopped before the fit)
        return trainer.current_epoch
    return min(trainer.global_step // int(per_epoch), trainer.current_epoch)


def build(cfg: DictConfig, run_dir: Path, callbacks=()) -> Built:
    """The DataModule, the LightningModule and a Trainer with the run's callbacks and logger."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from srn_lightning import clipping
    from srn_lightning.callbacks import RunConfig, add_chart
    from srn_lightning.data import DigitSumDataModule

    datamodule = DigitSumDataModule(
        hydra.utils.to_absolute_path(cfg.data.dir), cfg.length, cfg.batch_size, cfg.seed,
        cfg.data.num_workers, cfg.data.regenerate,
    )
    module = make_module(cfg)
    module.model.rnn_model.stop_point = interrupts.stop_point  # a signal stops a step of any length
    best = ModelCheckpoint(  # the best on dev, tested at the end
        dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:02d}", monitor="val/acc",
        mode="max", auto_insert_metric_name=False,
    )
    # Every epoch's end, for resume. (save_last=True above would not do: Lightning 2.6 writes
    # last.ckpt only when it also writes a best one, so it would hold the best epoch, not the last.)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1)
    monitor, flow, measure = measurements(cfg, module, run_dir)
    trainer = Trainer(
        **cfg.trainer,
        default_root_dir=run_dir,
        # max_queue: room for an epoch's scalars (9 a step; the book's data has 5 steps an epoch,
        # 38 at batch size 8), so logging them does not wait for the writer's thread; the default
        # of 10 costs 0.08 s of a 2 s fit (benchmarks/README.md)
        logger=TensorBoardLogger(run_dir, name="tb", version="", default_hp_metric=False,
                                 max_queue=1000),
        callbacks=[best, last, *measure, RunConfig(run_config(cfg)), *callbacks],
        **clipping.trainer_kwargs(cfg.clip.mode, cfg.clip.val),
    )
    add_chart(trainer, "grad norms (W, U, b)",
              {f"{when}-clip": [f"grad_norm_{when}/{n}" for n in monitor.names] for when in ("pre", "post")})
    return Built(trainer, module, datamodule, monitor, flow, best)


def measurements(cfg: DictConfig, module, run_dir: Path) -> tuple:
    """The per-step measurements and what acts on them: (grad-norm monitor, grad-flow monitor or
    None, their callbacks in the order they must run)."""
    from srn_lightning.callbacks import GradFlowMonitor, GradNormMonitor, RowWriter, StopOnNonFinite

    monitor = GradNormMonitor(module.tracked_parameters())
    tags = {"loss": "train/loss"} | {f"{n}_{when}": f"grad_norm_{when}/{n}"
                                     for when in ("pre", "post") for n in [*monitor.names, "total"]}
    callbacks = [monitor, StopOnNonFinite(monitor), RowWriter(monitor, run_dir / record.CSV_NAME, tags)]
    flow = GradFlowMonitor(module.model.rnn_model, cfg.length) if cfg.grad_time else None
    if flow:
        callbacks += [flow, RowWriter(flow, run_dir / record.GRAD_TIME_CSV,
                                      {"sigma_max_U": "grad_flow/sigma_max_U"})]
    return monitor, flow, callbacks


def make_module(cfg: DictConfig):
    """The LightningModule of a run's config."""
    from srn_lightning.module import SRNClassifier

    return SRNClassifier(
        input_size=cfg.model.input_size, hidden_size=cfg.model.hidden_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, reduction=str(cfg.reduction), clip_mode=str(cfg.clip.mode),
        clip_val=cfg.clip.val, cell=str(cfg.model.cell), optimizer=str(cfg.optimizer.name),
    )


def check_resume(cfg: DictConfig, run_dir) -> None:
    """A resumed run's checkpoint is one of this run in `run_dir` (resume.check_checkpoint);
    nothing to check for a fresh run, or for a run dir that starts over."""
    ckpt = resume_checkpoint(cfg.resume)
    if ckpt is not None:
        check_checkpoint(ckpt, make_module(cfg), run_config(cfg), run_dir)


def fit(built: Built, ckpt_path) -> dict:
    """Trains (from `ckpt_path` when resuming); returns how it ended, `status` "completed",
    "diverged" (with `diverged_step`) or "interrupted", and `fit_seconds`."""
    from srn_lightning.callbacks import Diverged

    start = time.perf_counter()
    try:
        built.trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=ckpt_path,
                          weights_only=True)
        outcome = {"status": "completed"}
    except Diverged as err:
        log.warning("diverged: %s; stopped, artifacts kept", err)
        outcome = {"status": "diverged", "diverged_step": err.step}
    except SystemExit:  # Lightning turns SIGTERM into SystemExit after a graceful stop
        if not built.trainer.interrupted:
            raise
        outcome = {"status": "interrupted"}
    return {**outcome, "fit_seconds": time.perf_counter() - start}


def evaluate_best(built: Built) -> dict:
    """The best-on-dev checkpoint: `dev_best`, its file `best_checkpoint`, and its `test_acc`;
    None for each when there is none (a run that diverged before its first validation)."""
    best = built.best
    if not best.best_model_path:
        return {"dev_best": None, "best_checkpoint": None, "test_acc": None}
    (test,) = built.trainer.test(built.module, datamodule=built.datamodule, verbose=False,
                                 ckpt_path=best.best_model_path, weights_only=True)
    return {"dev_best": float(best.best_model_score), "best_checkpoint": Path(best.best_model_path).name,
            "test_acc": test["test/acc"]}


def columns(monitor) -> dict[str, list]:
    """A monitor's rows as {column: values}."""
    return record.columns(monitor.rows(), monitor.columns)


def draw(cfg: DictConfig, built: Built, run_dir: Path) -> None:
    """The figures from the monitors' rows, as PNG and PDF, and as images in TensorBoard: the
    book's grad-norm figure, and the gradient's flow through time."""
    from srn_lightning import plots
    from srn_lightning.callbacks import log_image

    clip = cfg.clip.mode if cfg.clip.val is None else f"{cfg.clip.mode} {cfg.clip.val}"
    title = f"{cfg.model.cell}, clip={clip}, length={cfg.length}, lr={cfg.lr}, seed={cfg.seed}"
    step = built.trainer.global_step
    pixels = plots.plot_grad_norms(columns(built.monitor), run_dir / record.FIGURE_STEM,
                                   cfg.plot_steps, title=title)
    with naming(run_dir / "tb"):
        log_image(built.trainer, "grad_norms", pixels, step)
    if built.flow and len(built.flow.table()):
        pixels = plots.plot_grad_time(columns(built.flow), columns(built.monitor),
                                      run_dir / record.GRAD_TIME_STEM, title=title)
        with naming(run_dir / "tb"):
            log_image(built.trainer, "grad_time", pixels, step)


def stop_interrupted(cfg: DictConfig, built: Built | None, run_dir: Path,
                     stop: interrupts.Interrupted, known: dict | None = None) -> NoReturn:
    """An interrupted run's record, first and whole (metrics.json saying where it stopped, every
    number measured until then and how to go on), then the figure of what was measured; then
    SystemExit with that line."""
    interrupts.acted()
    trainer = built.trainer if built is not None else None
    resume = f"python -m srn_lightning.train resume={shlex.quote(str(run_dir))}"
    log.warning("interrupted by %s during %s; writing the record", stop.signal, stop.phase)
    # what was failing as the signal came: a write past a file-size limit (SIGXFSZ) names its file
    failing = stop.__context__ if isinstance(stop.__context__, OSError) else None
    metrics = record.interrupted_metrics(
        cfg, phase=stop.phase, signal=stop.signal, resume=resume,
        measured=measured(cfg, built, known or {}) if built is not None else None,
        error=failing and failure_reason(failing))
    # a second signal is ignored from now on (interrupts.Phases): the record is written whole
    write_record(run_dir, metrics)
    if trainer is not None:
        try:
            if built.monitor.rows():
                draw(cfg, built, run_dir)
            trainer.logger.finalize("failed")  # as Lightning does on an interrupt
        except Exception as err:  # the record says what happened; a figure that fails does not change it
            log.error("interrupted run: figure or TensorBoard files not written (%s)", failure_reason(err))
    raise SystemExit(f"interrupted ({stop.signal} during {stop.phase}) after {metrics['epochs']} "
                     f"completed epochs; continue with: {resume}")


class RunFailed(Exception):
    """A run that failed in `phase`, its record written: metrics.json says `failed`, in which phase,
    the error (naming the file, where a file could not be written) and every number measured
    before it. str() is one line; the error itself is the `__cause__`."""

    def __init__(self, phase: str, reason: str) -> None:
        self.phase, self.reason = phase, reason
        super().__init__(f"failed during {phase}: {reason}")

    def __reduce__(self):  # crosses a process boundary (a joblib worker's job) intact
        return type(self), (self.phase, self.reason)


def stop_failed(cfg: DictConfig, built: Built, run_dir: Path, phase: str, err: Exception,
                known: dict) -> NoReturn:
    """A run that failed once built: its record keeps every number measured before the failure."""
    reason = failure_reason(err)
    with contextlib.suppress(Exception):  # the logger's files may be what failed
        built.trainer.logger.finalize("failed")
    write_record(run_dir, record.failed_metrics(cfg, reason, phase, measured(cfg, built, known)))
    raise RunFailed(phase, reason) from err


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def failure_reason(err: BaseException) -> str:
    """An error as one line: a user's error's own message, else its type and message."""
    reason = explain(err) or f"{type(err).__name__}: {err}"
    return (reason.strip().splitlines() or [type(err).__name__])[0]


def write_record(run_dir: Path, metrics: dict) -> None:
    """metrics.json; if even it cannot be written (a full disk), one line says so and holds the
    record itself, on the console and in train.log."""
    try:
        record.write_metrics(run_dir, metrics)
    except OSError as err:
        log.error("%s not written (%s); the run's record: %s", run_dir / record.METRICS_NAME,
                  failure_reason(err), json.dumps(metrics))


# ---- the process -------------------------------------------------------------------------------

def setup_process(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """What a process that runs jobs sets up for each: its console, warning filters, exit handler and
    torch threads; and, unless the config sets it, whether the job shows a progress bar."""
    import lightning
    import torch
    from hydra.types import RunMode
    from omegaconf import open_dict

    from srn_lightning import console

    console.steady_streams()  # a joblib worker's or submitit job's own streams
    # Hydra's handlers (console and the run's train.log) print Lightning's messages; its own console
    # handler would print each of them a second time.
    logging.getLogger(lightning.__name__).handlers.clear()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    # `hydra.verbose=...`, Hydra's own switch for more log lines, counts as verbose too
    console.setup_console(cfg.verbose or bool(hydra_cfg.verbose), hydra_cfg.job.num if in_sweep else None)
    if cfg.trainer.get("enable_progress_bar") is None:
        with open_dict(cfg):
            cfg.trainer.enable_progress_bar = console.progress_bar_default(
                parallel=in_sweep and hydra_cfg.launcher.get("n_jobs", 1) != 1)
    # Everything lives in memory: worker processes would only slow a run this small down.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated")  # torch 2.13 vs Lightning 2.6
    exit_without_final_collection()
    threads = job_threads(cfg, hydra_cfg.launcher)
    if threads:
        torch.set_num_threads(threads)
    log.info("torch threads: %d", torch.get_num_threads())


def job_threads(cfg: DictConfig, launcher: DictConfig) -> int | None:
    """Torch CPU threads for one job: `threads` if set; else a share of the cores when a launcher
    runs jobs side by side (joblib: cores // n_jobs; submitit: its cpus_per_task, else 1), so
    parallel jobs do not oversubscribe the machine; else None, torch's own default."""
    if cfg.threads is not None and cfg.threads >= 1:  # other values: refused by validate(), in run()
        return cfg.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if "n_jobs" in launcher:  # joblib; negative counts back from the cores, as joblib does
        n_jobs = launcher.n_jobs if launcher.n_jobs > 0 else max(1, cores + 1 + launcher.n_jobs)
        return max(1, cores // n_jobs)
    if "cpus_per_task" in launcher:
        return launcher.cpus_per_task or 1
    return None


def exit_without_final_collection() -> None:
    """At interpreter exit, leave out the garbage collection of what is still alive.

    With torch, Lightning, TensorBoard and matplotlib loaded, Python's shutdown spends 1.3-1.7 s
    collecting their objects as it tears the modules down; the process's memory goes back to the
    system either way. A `gc.freeze()` exit handler skips that: the process exits in about 0.2 s.
    Exit handlers run newest first, so this one, registered when the first job starts, runs before
    those registered earlier (Hydra's, joblib's, the sweep report's): they still run, and what they
    allocate is collected as usual; only what was alive when it ran is left to the system. Python
    never promised `__del__` for objects alive at exit; everything the project writes is closed
    explicitly. Registered once per process that runs jobs: the basic launcher's process, each
    joblib worker, each submitit job (a joblib launching process only waits for its workers)."""
    global _exit_registered
    if not _exit_registered:
        atexit.register(gc.freeze)
        _exit_registered = True


_exit_registered = False


def record_failure(cfg: DictConfig, run_dir: Path, err: Exception) -> str:
    """A failed job is a result too: metrics.json says so, so a sweep report has its row. A
    metrics.json that a finished run left, or that the run wrote for this failure (`RunFailed`),
    is never overwritten. Returns the reason."""
    if isinstance(err, RunFailed):
        return err.reason
    reason = failure_reason(err)
    try:
        finished = record.read_metrics(run_dir)["status"] == "completed"
    except (OSError, ValueError):
        finished = False
    if not finished:
        write_record(run_dir, record.failed_metrics(cfg, reason))
    return reason


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns best dev accuracy, the metric a sweeper maximizes (0 if none)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        with interrupts.Phases():  # start-up (imports: seconds); the run has its own phases
            try:
                setup_process(cfg, hydra_cfg)
                locks.hold(run_dir)  # a sweep's job (a single run holds its dir from its config check on)
                if in_sweep:
                    interrupts.check_sweep(sweep_dir(hydra_cfg))  # a sweep stopped before this job
                metrics = run(cfg, run_dir)
            except interrupts.Interrupted as stop:
                stop_interrupted(cfg, None, run_dir, stop)
            except Exception as err:
                reason = record_failure(cfg, run_dir, err)
                if in_sweep:  # a single run's line is the CLI's error line
                    log.error("job failed (overrides: %s): %s", " ".join(hydra_cfg.overrides.task), reason)
                raise  # in a sweep Hydra runs the other jobs, then exits non-zero
            finally:
                locks.release(run_dir)
    except SystemExit as stop:
        if in_sweep and "basic_launcher" not in str(hydra_cfg.launcher.get("_target_", "")):
            # a job in a worker or a job of its own: it fails alone, its record written, and the
            # sweep goes on (a worker that exits would take the pool and its other jobs with it)
            raise JobInterrupted(str(stop.code)) from None
        raise
    return metrics["dev_best"] or 0.0


class JobInterrupted(Exception):
    """A sweep's job stopped by a signal, in a process other than the launching one; its record
    (metrics.json, `interrupted`) is written. str() is the line the run ended with."""


def sweep_dir(hydra_cfg) -> Path:
    """The sweep dir of a job, absolute."""
    d = Path(hydra_cfg.sweep.dir)
    return d if d.is_absolute() else Path(hydra_cfg.runtime.cwd) / d


def cli() -> None:
    """`python -m srn_lightning.train ...`: Hydra's main, with errors a user can fix printed as one
    line (no traceback), and `resume=` turned into the run's own config and dir."""
    from concurrent.futures.process import BrokenProcessPool

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from srn_lightning.console import steady_streams

    steady_streams()  # before Hydra points its console handler at stdout
    # Hydra would print config errors itself, over several lines; let them reach us instead.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        with interrupts.Phases("start-up or exit"):  # a run's own phases cover everything in between
            sys.argv[1:] = resume_argv(sys.argv[1:])
            main()
    except interrupts.Interrupted as stop:
        interrupts.acted()
        sys.exit(f"error: interrupted by {stop.signal} (outside a run: before it started, after "
                 "its record was written, or while a sweep's launcher waited for its jobs, whose "
                 "records say how far each got)")
    except UserError as err:
        sys.exit(f"error: {err}")
    except JobInterrupted as err:  # a sweep's job stopped by a signal, its record written
        sys.exit(f"error: {err}")
    except BrokenProcessPool as err:  # joblib's pool, after one of its workers was killed
        sys.exit(f"error: a worker process of the sweep died ({type(err).__name__}: "
                 f"{_first_line(err)}); the pool stopped the other workers' jobs, which have no "
                 "record (resume= continues each from its last checkpoint), and ran no further job")
    except RunFailed as err:  # its record is written; what failed is one line
        if isinstance(err.__cause__, UserError):
            sys.exit(f"error: {err.__cause__}")  # the user's own error, as it reads
        if not isinstance(err.__cause__, OSError):
            raise  # a defect: the traceback is for whoever fixes it
        sys.exit(f"error: {err}")
    except (HydraException, OmegaConfBaseException) as err:
        line = explain(err)
        if line is None:
            raise
        sys.exit(f"error: {line}")


if __name__ == "__main__":
    cli()
