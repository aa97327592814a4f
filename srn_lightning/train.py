"""Train the book's SRN from a Hydra config: build, fit, test the best-on-dev checkpoint, record,
and end with the run's answer on the console.

    python -m srn_lightning.train clip=none
    python -m srn_lightning.train -m clip=norm,value,none length=10,20
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import hydra
from omegaconf import DictConfig

from srn_lightning import answer, attempts, cluster, console, interrupts, locks, preflight, record
from srn_lightning.config import ALLOWED, CONFIG_DIR, config_keys, did_you_mean, trainer_arguments
from srn_lightning.errors import UserError
from srn_lightning.resume import resume_argv, resume_checkpoint, run_config, take_checked

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
    is tested); "interrupted" (SIGINT/SIGTERM in any phase: metrics.json says which, last.ckpt holds
    the last completed epoch; raises SystemExit after writing metrics.json, once `on_stop` has
    been called with the signal's name). `history` (a job's earlier attempts, attempts.plan) goes
    into the record; `sweep_dir`: the sweep of a job, which its record says to continue.
    """
    if not checked:
        preflight.check_job(cfg, run_dir)
    from lightning.pytorch import seed_everything

    run_dir = Path(run_dir)
    built = None
    with interrupts.Phases() as phases:
        try:
            seed_everything(cfg.seed, workers=True, verbose=False)
            built = build(cfg, run_dir, callbacks)
            phases.enter("data")
            built.datamodule.prepare_data()
            phases.enter("fit")
            outcome = fit(built, resume_checkpoint(cfg.resume))
            if outcome["status"] == "interrupted":
                raise interrupts.Interrupted("fit", phases.signum or signal.SIGINT)
            phases.check()  # a SIGTERM that came as the fit ended
            return finish(cfg, built, run_dir, outcome, phases, history or {})
        except interrupts.Interrupted as stop:
            stop_interrupted(cfg, built, run_dir, stop, history or {}, on_stop, sweep_dir)


def finish(cfg: DictConfig, built: Built, run_dir: Path, outcome: dict, phases, history: dict) -> dict:
    """After the fit: test the best checkpoint, draw, record."""
    from srn_lightning import measurements

    try:
        phases.enter("test")
        best = evaluate_best(built)
        metrics = record.finished_metrics(
            cfg=cfg, **outcome, **best, epochs=epochs_done(built.trainer),
            steps=built.trainer.global_step, measured=measurements.summary(built.measured),
            **history,
        )
        phases.enter("figures")
        draw(cfg, built, run_dir)
        built.trainer.logger.log_hyperparams(record.hparams(cfg), record.hparam_metrics(metrics))
    except Exception:
        built.trainer.logger.finalize("failed")
        raise
    phases.enter("record")
    with interrupts.deferred():  # a signal now waits until the record is whole, then is acted on
        # the figure and HParams events written after test: flushed and closed here, not left to
        # the process's exit ("success" also rewrites the logger's hparams.yaml)
        built.trainer.logger.finalize("success")
        record.write_metrics(run_dir, metrics)
    for line in answer.lines(metrics, built.measured[0].columns(), run_dir, launch_dir()):  # console, train.log
        log.info(line)
    return metrics


def launch_dir() -> str:
    """Where the command was launched: the working dir, unless Hydra changed it for the job
    (hydra.job.chdir=true), then the one it was launched from."""
    from hydra.core.hydra_config import HydraConfig

    return hydra.utils.get_original_cwd() if HydraConfig.initialized() else os.getcwd()


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

    from srn_lightning import clipping, measurements
    from srn_lightning.callbacks import CheckedCheckpointIO, RunConfig
    from srn_lightning.data import DigitSumDataModule
    from srn_lightning.module import module_from_config

    datamodule = DigitSumDataModule(
        hydra.utils.to_absolute_path(cfg.data.dir), cfg.length, cfg.batch_size, cfg.seed,
        cfg.data.num_workers, cfg.data.regenerate,
    )
    module = module_from_config(cfg)
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
        **clipping.trainer_kwargs(cfg.clip.mode, cfg.clip.val),
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

    clip = cfg.clip.mode if cfg.clip.val is None else f"{cfg.clip.mode} {cfg.clip.val}"
    title = f"{cfg.model.cell}, clip={clip}, length={cfg.length}, lr={cfg.lr}, seed={cfg.seed}"
    measurements.draw(built.trainer, built.measured, run_dir, title)


def stop_interrupted(cfg: DictConfig, built: Built | None, run_dir: Path,
                     stop: interrupts.Interrupted, history: dict | None = None, on_stop=None,
                     sweep_dir: Path | None = None) -> NoReturn:
    """An interrupted run's record, first and whole (metrics.json saying where it stopped and how
    to go on: a sweep's job, by continuing its sweep), then the figure of what was measured; then
    `on_stop` with the signal's name, and SystemExit with that line."""
    trainer = built.trainer if built is not None else None
    epochs, steps = (epochs_done(trainer), trainer.global_step) if trainer else (0, 0)
    resume = (f"python -m srn_lightning.train -m resume={shlex.quote(str(sweep_dir))}" if sweep_dir
              else f"python -m srn_lightning.train resume={shlex.quote(str(run_dir))}")
    log.warning("interrupted by %s during %s; writing the record", stop.signal, stop.phase)
    # a second signal is ignored from now on (interrupts.Phases): the record is written whole
    record.write_metrics(run_dir, record.interrupted_metrics(
        cfg, epochs=epochs, steps=steps, phase=stop.phase, signal=stop.signal, resume=resume)
        | (history or {}))
    if trainer is not None:
        try:
            draw(cfg, built, run_dir)  # what was measured
            trainer.logger.finalize("failed")  # as Lightning does on an interrupt
        except Exception:  # the record says what happened; a figure that fails does not change it
            log.exception("interrupted run: figure or TensorBoard files not written")
    if on_stop is not None:
        on_stop(stop.signal)
    raise SystemExit(f"interrupted ({stop.signal} during {stop.phase}) after {epochs} completed "
                     f"epochs; continue with: {resume}")


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
    from hydra.types import RunMode
    from omegaconf import open_dict

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = Path(hydra_cfg.sweep.dir) if in_sweep else None
    requeue = cluster.requeue_handler()  # before the run's own handlers replace it
    history: dict = {}
    with interrupts.Phases():  # start-up (imports: seconds); the run has its own phases
        try:
            job_num = preflight.job_number(hydra_cfg.job.num) if in_sweep else None
            console.setup_process(cfg, hydra_cfg, job_num)
            if in_sweep:  # a single run's checks ran before Hydra made its dir (preflight.CheckConfig)
                locks.hold(run_dir)  # a sweep's job: Hydra made its dir; an earlier attempt may be there
                plan = attempts.plan(run_dir)
                if "kept" in plan:
                    return plan["kept"].get("dev_best") or 0.0
                if "resume" in plan:
                    with open_dict(cfg):
                        cfg.resume = plan["resume"]
                history = plan.get("history", {})
                if cluster.requeues():
                    history["requeues"] = max(history.get("requeues", 0), cluster.requeues())
                preflight.check_job(cfg, run_dir)
            locks.hold(run_dir)  # a sweep's job (a single run holds its dir from its config check on)
            metrics = run(cfg, run_dir, checked=True, history=history, sweep_dir=sweep_dir,
                          on_stop=lambda name: cluster.requeue_after(name, requeue))
        except interrupts.Interrupted as stop:
            stop_interrupted(cfg, None, run_dir, stop, history, sweep_dir=sweep_dir,
                             on_stop=lambda name: cluster.requeue_after(name, requeue))
        except Exception as err:
            reason = record_failure(cfg, run_dir, err)
            single = not in_sweep and isinstance(err, UserError)
            log.error("job failed (overrides: %s): %s", " ".join(hydra_cfg.overrides.task), reason,
                      extra={console.CONSOLE: not single})  # a single run's console gets one line
            if single:  # past Hydra's own "Error executing job" line: the user's error, once
                raise SystemExit(f"error: {err}") from None
            raise  # in a sweep Hydra runs the other jobs, then exits non-zero
        finally:
            locks.release(run_dir)
    return metrics["dev_best"] or 0.0


# Config options whose plugin comes with an extra of the package, and the line that says so when
# the plugin is not installed (Hydra then knows no config of that name).
EXTRAS = {
    ("hydra/sweeper", "optuna"): "hparams_search=optuna needs the optuna sweeper, in the search extra: "
                                 "pip install -e '.[search]' (from the project's checkout)",
}


def explain(err: BaseException) -> str | None:
    """One line for an error a user can fix from the command line; None for anything else."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(err, MissingConfigException) and err.options is not None:
        group, _, name = (err.missing_cfg_file or "").rpartition("/")
        if (group, name) in EXTRAS:
            return EXTRAS[group, name]
        allowed = ", ".join(sorted(err.options))
        return f"{group}={name}: no such option; {group} must be one of {allowed}"
    cause = err.__cause__
    if isinstance(err, ConfigCompositionException) and isinstance(
        cause, (ConfigKeyError, ConfigAttributeError)
    ):
        key = cause.full_key or str(cause.key)
        if key.startswith("trainer."):
            if key.removeprefix("trainer.") in trainer_arguments():
                return f"{key}: not in the config yet; add it with +{key}=..."
            known = [f"trainer.{k}" for k in trainer_arguments()]
        else:
            known = config_keys()
        return f"{key}: no such config key{did_you_mean(key, known)}; keys are listed in the README"
    if isinstance(err, ConfigCompositionException) and isinstance(cause, ValidationError):
        key = cause.full_key
        got = getattr(cause, "value", None)
        allowed = ALLOWED.get(key) or str(cause).splitlines()[0]
        return f"{key}={got}: not allowed; {key} must be {allowed}"
    if isinstance(err, OverrideParseException) and "=" in (err.override or ""):
        key, _, value = err.override.partition("=")
        why = " ".join(str(err).strip().splitlines()[-2:-1] or [""]).strip(" ^") if "Error parsing" in str(err) else ""
        quoted = "'" + key + '="' + value.replace('"', '\\"') + '"' + "'"
        return (f"{err.override}: Hydra's override grammar cannot read this value"
                + (f" ({why})" if why else "") + f"; quote it for Hydra and the shell: {quoted}")
    if isinstance(err, (OverrideParseException, ConfigCompositionException)):
        return str(err).strip().splitlines()[0]
    return None


def cli() -> None:
    """`python -m srn_lightning.train ...`: Hydra's main, with errors a user can fix printed as one
    line (no traceback), and `resume=` turned into the run's own config and dir."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra would print config errors itself, over several lines; let them reach us instead.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        with interrupts.Phases("start-up or exit"):  # a run's own phases cover everything in between
            sys.argv[1:] = resume_argv(sys.argv[1:])
            cluster.register_launcher()
            main()
    except interrupts.Interrupted as stop:
        sys.exit(f"error: interrupted by {stop.signal} (before the run started, or after its "
                 "record was written)")
    except UserError as err:
        sys.exit(f"error: {err}")
    except (HydraException, OmegaConfBaseException) as err:
        line = explain(err)
        if line is None:
            raise
        sys.exit(f"error: {line}")


if __name__ == "__main__":
    cli()
