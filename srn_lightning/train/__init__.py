"""A run, as a story: build, make the data, fit, test the best-on-dev checkpoint, draw, record, and
end with the run's answer; a run stopped by a signal or failed keeps its record too. The command
line that starts runs and sweeps' jobs is `srn_lightning/train/command.py`:

    python -m srn_lightning.train clip=none
    python -m srn_lightning.train -m clip=norm,value,none length=10,20
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import hydra
from omegaconf import DictConfig

from srn_lightning import answer, attempts, cluster, interrupts, preflight, record
from srn_lightning.errors import RunFailed, reason
from srn_lightning.files import naming
from srn_lightning.resume import resume_checkpoint, run_config, take_checked

log = logging.getLogger(__name__)


class Built(NamedTuple):
    """What a run trains with, built from its config."""

    trainer: Any
    module: Any
    datamodule: Any
    measured: list  # measurements.Measurement: the grad norms first, then the rest
    best: Any  # the ModelCheckpoint that keeps the best epoch on dev


def run(cfg: DictConfig, run_dir, callbacks=(), *, checked: bool = False, history=None,
        on_stop=None, sweep_dir=None) -> dict:
    """One run in `run_dir`: check its config (preflight.check_job, unless `checked` says that was
    done), build, make the data files, fit, test the best-on-dev checkpoint, draw, record, log its
    answer (`answer.lines`). Returns the metrics it also writes to `run_dir/metrics.json`.
    `callbacks` are added to the project's own (handy for notebooks and tests).

    status "completed"; "diverged" (NaN/Inf: a result, with the step; the best checkpoint before it
    is tested); "interrupted" (a signal in any phase, `interrupts.STOPS`: metrics.json says which,
    last.ckpt holds the last completed epoch; raises SystemExit after writing metrics.json, once
    `on_stop` has been called with the signal's name). `history` (a job's earlier attempts,
    attempts.plan) goes into the record; `sweep_dir`: the sweep of a job, which its record says to
    continue.
    """
    if not checked:
        preflight.check_job(cfg, run_dir)
    from lightning.pytorch import seed_everything

    run_dir = Path(run_dir)
    # known: what the run has measured so far (its fit's outcome, best), and its earlier attempts
    built, known = None, dict(history or {})
    with interrupts.Phases() as phases:
        try:
            seed_everything(cfg.seed, workers=True, verbose=False)
            built = build(cfg, run_dir, callbacks)
            phases.enter("data")
            built.datamodule.prepare_data()
            phases.enter("fit")
            outcome = fit(built, resume_checkpoint(cfg.resume))
            known.update(outcome)
            if outcome["status"] == "interrupted":
                raise interrupts.Interrupted("fit", phases.signum or signal.SIGINT)
            phases.check()  # a SIGTERM that came as the fit ended
            return finish(cfg, built, run_dir, outcome, phases, known)
        except interrupts.Interrupted as stop:
            stop_interrupted(cfg, built, run_dir, stop, known, on_stop, sweep_dir)
        except Exception as err:
            if built is None:  # nothing measured: the caller records it (main: record_failure)
                raise
            stop_failed(cfg, built, run_dir, phases.phase, err, known)


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
    for line in answer.lines(metrics, built.measured[0].columns(), run_dir):  # console, train.log
        log.info(line)
    return metrics


def measured(cfg: DictConfig, built: Built, known: dict) -> dict:
    """The run's record as far as it has measured: the fit's outcome and seconds once it has
    ended (`known`), the best on dev so far, the test accuracy once tested, the measurements'
    summaries over every step done; None for what is not measured yet."""
    from srn_lightning import measurements

    best = built.best
    dev_best = None if best.best_model_score is None else float(best.best_model_score)
    found = {"status": "completed", "fit_seconds": None, "dev_best": dev_best, "test_acc": None,
             "best_checkpoint": Path(best.best_model_path).name if best.best_model_path else None}
    return record.finished_metrics(
        cfg=cfg, **{**found, **known}, epochs=measurements.epochs_done(built.trainer),
        steps=built.trainer.global_step, measured=measurements.summary(built.measured),
    )


def build(cfg: DictConfig, run_dir: Path, callbacks=()) -> Built:
    """The DataModule, the LightningModule and a Trainer with the run's callbacks and logger."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from srn_lightning import clipping, measurements
    from srn_lightning.callbacks import CheckedCheckpointIO, RunConfig
    from srn_lightning.datamodule import DigitSumDataModule
    from srn_lightning.module import module_from_config
    from srn_lightning.profiler import profiler_kwargs

    datamodule = DigitSumDataModule(
        hydra.utils.to_absolute_path(cfg.data.dir), cfg.length, cfg.batch_size, cfg.seed,
        cfg.data.num_workers, cfg.data.regenerate,
    )
    module = module_from_config(cfg)
    module.model.rnn_model.stop_point = interrupts.stop_point  # a signal stops a step of any length
    best = ModelCheckpoint(  # the best on dev, tested at the end
        dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:02d}", monitor="val/acc",
        mode="max", auto_insert_metric_name=False,
    )
    # Every epoch's end, for resume. (save_last=True above would not do: Lightning 2.6 writes
    # last.ckpt only when it also writes a best one, so it would hold the best epoch, not the last.)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1)
    measured = measurements.for_run(cfg, module)
    trainer = Trainer(
        **cfg.trainer,
        default_root_dir=run_dir,
        # max_queue: room for an epoch's scalars (up to 17 a step; the book's data has 5 steps an epoch,
        # 38 at batch size 8), so logging them does not wait for the writer's thread; the default
        # of 10 costs 0.08 s of a 2 s fit (benchmarks/README.md)
        # resumed: the steps the interrupted attempt logged after its checkpoint are purged, so
        # TensorBoard shows one run
        logger=TensorBoardLogger(run_dir, name="tb", version="", default_hp_metric=False,
                                 max_queue=1000, purge_step=attempts.purge_step(cfg.resume)),
        callbacks=[best, last, *(cb for m in measured for cb in m.callbacks(run_dir)),
                   RunConfig(run_config(cfg)), *callbacks],
        # a resumed checkpoint: read once, by the checks; the cluster environment: one requeue
        # mechanism, submitit's (srn_lightning/cluster.py)
        plugins=[CheckedCheckpointIO(take_checked), cluster.lightning_environment()],
        **clipping.trainer_kwargs(cfg.clip.mode, cfg.clip.val), **profiler_kwargs(cfg.trainer),
    )
    measurements.add_charts(trainer, measured)
    return Built(trainer, module, datamodule, measured, best)


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


def draw(cfg: DictConfig, built: Built, run_dir: Path) -> None:
    """The measurements' figures, as PNG and PDF, and as images in TensorBoard."""
    from srn_lightning import measurements

    measurements.draw(built.trainer, built.measured, run_dir, title(cfg))


def title(cfg: DictConfig) -> str:
    """A run's figures' title: its setting and seed."""
    clip = cfg.clip.mode if cfg.clip.val is None else f"{cfg.clip.mode} {cfg.clip.val}"
    return f"{cfg.model.cell}, clip={clip}, length={cfg.length}, lr={cfg.lr}, seed={cfg.seed}"


def stop_interrupted(cfg: DictConfig, built: Built | None, run_dir: Path,
                     stop: interrupts.Interrupted, known: dict | None = None, on_stop=None,
                     sweep_dir: Path | None = None) -> NoReturn:
    """An interrupted run's record, first and whole (metrics.json saying where it stopped, every
    number measured until then and how to go on: a sweep's job, by continuing its sweep), then the
    figure of what was measured; then `on_stop` with the signal's name, and SystemExit with that
    line. `known`: what the run measured, and its earlier attempts."""
    interrupts.acted()
    trainer = built.trainer if built is not None else None
    resume = (f"python -m srn_lightning.train -m resume={shlex.quote(str(sweep_dir))}" if sweep_dir
              else f"python -m srn_lightning.train resume={shlex.quote(str(run_dir))}")
    log.warning("interrupted by %s during %s; writing the record", stop.signal, stop.phase)
    # what was failing as the signal came: a write past a file-size limit (SIGXFSZ) names its file
    failing = stop.__context__ if isinstance(stop.__context__, OSError) else None
    metrics = record.interrupted_metrics(
        cfg, phase=stop.phase, signal=stop.signal, resume=resume,
        measured=measured(cfg, built, known or {}) if built is not None else None,
        error=failing and reason(failing))
    metrics |= {k: v for k, v in (known or {}).items() if k in attempts.HISTORY}  # before the build too
    # a second signal is ignored from now on (interrupts.Phases): the record is written whole
    record.write_or_log(run_dir, metrics)
    if trainer is not None:
        try:
            draw(cfg, built, run_dir)  # what was measured
            trainer.logger.finalize("failed")  # as Lightning does on an interrupt
        except Exception as err:  # the record says what happened; a figure that fails does not change it
            log.error("interrupted run: figure or TensorBoard files not written (%s)", reason(err))
    if on_stop is not None:
        on_stop(stop.signal)
    raise SystemExit(f"interrupted ({stop.signal} during {stop.phase}) after {metrics['epochs']} "
                     f"completed epochs; continue with: {resume}")


def stop_failed(cfg: DictConfig, built: Built, run_dir: Path, phase: str, err: Exception,
                known: dict) -> NoReturn:
    """A run that failed once built: its record keeps every number measured before the failure."""
    why = reason(err)
    with contextlib.suppress(Exception):  # the logger's files may be what failed
        built.trainer.logger.finalize("failed")
    record.write_or_log(run_dir, record.failed_metrics(cfg, why, phase, measured(cfg, built, known)))
    raise RunFailed(phase, why) from err
