"""Train the book's SRN from a Hydra config: build, fit, test the best-on-dev checkpoint, record,
and end with the run's answer on the console.

    python -m srn_lightning.train clip=none
    python -m srn_lightning.train -m clip=norm,value,none length=10,20
"""

from __future__ import annotations

import contextlib
import json
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
from srn_lightning.errors import UserError, first_line
from srn_lightning.files import naming
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
    for line in answer.lines(metrics, built.measured[0].columns(), run_dir, launch_dir()):  # console, train.log
        log.info(line)
    return metrics


def launch_dir() -> str:
    """Where the command was launched: the working dir, unless Hydra changed it for the job
    (hydra.job.chdir=true), then the one it was launched from."""
    from hydra.core.hydra_config import HydraConfig

    return hydra.utils.get_original_cwd() if HydraConfig.initialized() else os.getcwd()


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
        cfg=cfg, **{**found, **known}, epochs=epochs_done(built.trainer),
        steps=built.trainer.global_step, measured=measurements.summary(built.measured),
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

    from srn_lightning import clipping, measurements
    from srn_lightning.callbacks import CheckedCheckpointIO, RunConfig
    from srn_lightning.data import DigitSumDataModule
    from srn_lightning.module import module_from_config

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
        error=failing and failure_reason(failing))
    metrics |= {k: v for k, v in (known or {}).items() if k in attempts.HISTORY}  # before the build too
    # a second signal is ignored from now on (interrupts.Phases): the record is written whole
    write_record(run_dir, metrics)
    if trainer is not None:
        try:
            draw(cfg, built, run_dir)  # what was measured
            trainer.logger.finalize("failed")  # as Lightning does on an interrupt
        except Exception as err:  # the record says what happened; a figure that fails does not change it
            log.error("interrupted run: figure or TensorBoard files not written (%s)", failure_reason(err))
    if on_stop is not None:
        on_stop(stop.signal)
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
    from omegaconf import open_dict

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    sweep = sweep_dir(hydra_cfg) if in_sweep else None
    requeue = cluster.requeue_handler()  # before the run's own handlers replace it
    history: dict = {}
    try:
        with interrupts.Phases():  # start-up (imports: seconds); the run has its own phases
            try:
                job_num = preflight.job_number(hydra_cfg.job.num) if in_sweep else None
                console.setup_process(cfg, hydra_cfg, job_num)
                if in_sweep:  # a single run's checks ran before Hydra made its dir (preflight.CheckConfig)
                    locks.hold(run_dir)  # Hydra made the job's dir; an earlier attempt may be there
                    interrupts.check_sweep(sweep)  # a sweep stopped before this job
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
                locks.hold(run_dir)  # a single run holds its dir from its config check on
                metrics = run(cfg, run_dir, checked=True, history=history, sweep_dir=sweep,
                              on_stop=lambda name: cluster.requeue_after(name, requeue))
            except interrupts.Interrupted as stop:
                stop_interrupted(cfg, None, run_dir, stop, history, sweep_dir=sweep,
                                 on_stop=lambda name: cluster.requeue_after(name, requeue))
            except Exception as err:
                reason = record_failure(cfg, run_dir, err)
                line = None if in_sweep else one_line(err)
                log.error("job failed (overrides: %s): %s", " ".join(hydra_cfg.overrides.task), reason,
                          extra={console.CONSOLE: line is None})  # a single run's console: one line
                if line is not None:  # past Hydra's own "Error executing job" line: the error, once
                    raise SystemExit(f"error: {line}") from None
                raise  # in a sweep Hydra runs the other jobs, then exits non-zero
            finally:
                locks.release(run_dir)
    except SystemExit as stop:
        # a job in a worker (joblib) or a local job of its own (submitit_local), stopped by a signal
        # (the run's own line, a str): it fails alone, its record written, and the sweep goes on (a
        # worker that exits would take the pool and its other jobs with it). A Slurm job exits: Slurm
        # requeues or ends it, and the launcher tells which (cluster.py); submitit's requeue exits
        # with a number.
        launcher = str(hydra_cfg.launcher.get("_target_", ""))
        if (in_sweep and isinstance(stop.code, str) and "basic_launcher" not in launcher
                and "slurm" not in launcher.lower()):
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


def one_line(err: BaseException) -> str | None:
    """The one line the console shows for an error a user can act on without a traceback (their
    own error, or a file the run could not write, its record written); None for a defect."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, RunFailed):
        if isinstance(err.__cause__, UserError):
            return str(err.__cause__)  # the user's own error, as it reads
        if isinstance(err.__cause__, OSError):
            return str(err)
    return None


def register_sweeper() -> None:
    """The project's sweeper (srn_lightning/stacking.py) known to Hydra by name, as
    `cluster.register_launcher` makes its launcher known: Hydra's walk of `hydra_plugins` does not
    see a package installed in editable mode."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.srn_lightning_sweeper import SeedStackingSweeper

    Plugins.instance().register(SeedStackingSweeper)


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
            cluster.register_launcher()
            register_sweeper()
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
                 f"{first_line(err)}); the pool stopped the other workers' jobs, which have no "
                 "record (resume= continues each from its last checkpoint), and ran no further job")
    except RunFailed as err:  # its record is written; what failed is one line
        line = one_line(err)
        if line is None:
            raise  # a defect: the traceback is for whoever fixes it
        sys.exit(f"error: {line}")
    except (HydraException, OmegaConfBaseException) as err:
        line = explain(err)
        if line is None:
            raise
        sys.exit(f"error: {line}")


if __name__ == "__main__":
    cli()
