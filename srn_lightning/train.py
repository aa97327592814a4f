"""Train the book's SRN from a Hydra config: build, fit, test the best-on-dev checkpoint, record,
and end with the run's answer on the console.

    python -m srn_lightning.train clip=none
    python -m srn_lightning.train -m clip=norm,value,none length=10,20
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import hydra
from omegaconf import DictConfig

from srn_lightning import answer, record
from srn_lightning.config import check_trainer_keys, explain, validate
from srn_lightning.errors import UserError
from srn_lightning.resume import resume_argv

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


class Built(NamedTuple):
    """What a run trains with, built from its config."""

    trainer: Any
    module: Any
    datamodule: Any
    monitor: Any
    best: Any  # the ModelCheckpoint that keeps the best epoch on dev


def run(cfg: DictConfig, run_dir, callbacks=()) -> dict:
    """One run in `run_dir`: build, fit, test the best-on-dev checkpoint, record, log its answer
    (`answer.lines`). Returns the metrics it also writes to `run_dir/metrics.json`. `callbacks` are added to the project's own
    (handy for notebooks and tests).

    status "completed"; "diverged" (NaN/Inf: a result, with the step; the best checkpoint before it
    is tested); "interrupted" (SIGINT/SIGTERM: last.ckpt holds the last completed epoch; raises
    SystemExit after writing metrics.json).
    """
    validate(cfg)
    check_trainer_keys(cfg.trainer)
    from lightning.pytorch import seed_everything

    run_dir = Path(run_dir)
    seed_everything(cfg.seed, workers=True, verbose=False)
    built = build(cfg, run_dir, callbacks)
    outcome = fit(built, cfg.resume)
    if outcome["status"] == "interrupted":
        stop_interrupted(cfg, built, run_dir)
    finished = False
    columns = record.columns(built.monitor.rows())
    try:
        metrics = record.finished_metrics(
            cfg=cfg, **outcome, **evaluate_best(built), epochs=built.trainer.current_epoch,
            steps=built.trainer.global_step, columns=columns,
        )
        draw(cfg, built, run_dir)
        built.trainer.logger.log_hyperparams(record.hparams(cfg), record.hparam_metrics(metrics))
        finished = True
    finally:
        # the figure and HParams events written after test: flushed and closed here, not left to
        # the process's exit ("success" also rewrites the logger's hparams.yaml)
        built.trainer.logger.finalize("success" if finished else "failed")
    record.write_metrics(run_dir, metrics)
    for line in answer.lines(metrics, columns, run_dir):  # the run's answer, on the console and in train.log
        log.info(line)
    return metrics


def build(cfg: DictConfig, run_dir: Path, callbacks=()) -> Built:
    """The DataModule, the LightningModule and a Trainer with the run's callbacks and logger."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from srn_lightning import clipping
    from srn_lightning.callbacks import GradNormMonitor, GradNormWriter, StopOnNonFinite
    from srn_lightning.data import DigitSumDataModule
    from srn_lightning.module import SRNClassifier

    datamodule = DigitSumDataModule(
        hydra.utils.to_absolute_path(cfg.data.dir), cfg.length, cfg.batch_size, cfg.seed,
        cfg.data.num_workers, cfg.data.regenerate,
    )
    module = SRNClassifier(
        input_size=cfg.model.input_size, hidden_size=cfg.model.hidden_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, reduction=str(cfg.reduction), clip_mode=str(cfg.clip.mode),
        clip_val=cfg.clip.val,
    )
    best = ModelCheckpoint(  # the best on dev, tested at the end
        dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:02d}", monitor="val/acc",
        mode="max", auto_insert_metric_name=False,
    )
    # Every epoch's end, for resume. (save_last=True above would not do: Lightning 2.6 writes
    # last.ckpt only when it also writes a best one, so it would hold the best epoch, not the last.)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1)
    monitor = GradNormMonitor(module.tracked_parameters())
    trainer = Trainer(
        **cfg.trainer,
        default_root_dir=run_dir,
        logger=TensorBoardLogger(run_dir, name="tb", version="", default_hp_metric=False),
        callbacks=[best, last, monitor, StopOnNonFinite(monitor),
                   GradNormWriter(monitor, run_dir / record.CSV_NAME), *callbacks],
        **clipping.trainer_kwargs(cfg.clip.mode, cfg.clip.val),
    )
    return Built(trainer, module, datamodule, monitor, best)


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
    except SystemExit:  # Lightning turns Ctrl-C and SIGTERM into SystemExit after a graceful stop
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


def draw(cfg: DictConfig, built: Built, run_dir: Path) -> None:
    """The book's figure from the monitor's rows, as PNG and PDF, and as an image in TensorBoard."""
    from srn_lightning import plots
    from srn_lightning.callbacks import log_image

    clip = cfg.clip.mode if cfg.clip.val is None else f"{cfg.clip.mode} {cfg.clip.val}"
    pixels = plots.plot_grad_norms(
        record.columns(built.monitor.rows()), run_dir / record.FIGURE_STEM, cfg.plot_steps,
        title=f"clip={clip}, length={cfg.length}, lr={cfg.lr}, seed={cfg.seed}",
    )
    log_image(built.trainer, "grad_norms", pixels, built.trainer.global_step)


def stop_interrupted(cfg: DictConfig, built: Built, run_dir: Path) -> NoReturn:
    """An interrupted run's record: the figure of what was measured, metrics.json saying how to
    go on; then SystemExit with that line."""
    epochs_done = built.trainer.current_epoch  # epochs whose end (and last.ckpt) was reached
    draw(cfg, built, run_dir)
    built.trainer.logger.finalize("failed")  # as Lightning does on an interrupt
    resume = f"python -m srn_lightning.train resume={run_dir}"
    record.write_metrics(run_dir, record.interrupted_metrics(
        cfg, epochs=epochs_done, steps=built.trainer.global_step, resume=resume))
    raise SystemExit(f"interrupted after {epochs_done} completed epochs; continue with: {resume}")


# ---- the process -------------------------------------------------------------------------------

def setup_process(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """What a process that runs jobs sets up for each: its console, warning filters, exit handler and
    torch threads; and, unless the config sets it, whether the job shows a progress bar."""
    import lightning
    import torch
    from hydra.types import RunMode
    from omegaconf import open_dict

    from srn_lightning import console

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
    metrics.json that a finished run left is never overwritten. Returns the reason."""
    reason = explain(err) or f"{type(err).__name__}: {err}"
    try:
        finished = record.read_metrics(run_dir)["status"] == "completed"
    except (OSError, ValueError):
        finished = False
    if not finished:
        record.write_metrics(run_dir, record.failed_metrics(cfg, reason))
    return reason


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns best dev accuracy, the metric a sweeper maximizes (0 if none)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    setup_process(cfg, hydra_cfg)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        metrics = run(cfg, run_dir)
    except Exception as err:
        reason = record_failure(cfg, run_dir, err)
        log.error("job failed (overrides: %s): %s", " ".join(hydra_cfg.overrides.task), reason)
        raise  # in a sweep Hydra runs the other jobs, then exits non-zero
    return metrics["dev_best"] or 0.0


def cli() -> None:
    """`python -m srn_lightning.train ...`: Hydra's main, with errors a user can fix printed as one
    line (no traceback), and `resume=` turned into the run's own config and dir."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra would print config errors itself, over several lines; let them reach us instead.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        sys.argv[1:] = resume_argv(sys.argv[1:])
        main()
    except UserError as err:
        sys.exit(f"error: {err}")
    except (HydraException, OmegaConfBaseException) as err:
        line = explain(err)
        if line is None:
            raise
        sys.exit(f"error: {line}")


if __name__ == "__main__":
    cli()
