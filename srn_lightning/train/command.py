"""The command line: Hydra's entry point for a run or a sweep's job (`main`), and the CLI around it
(`cli`), which prints an error a user can fix as one line and turns `resume=` into the run's own
config and dir. The run itself is the story in `srn_lightning.train`.

    python -m srn_lightning.train clip=none
    python -m srn_lightning.train -m clip=norm,value,none length=10,20
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from srn_lightning import attempts, cluster, console, interrupts, job_process, locks, preflight, record
from srn_lightning.config import ALLOWED, CONFIG_DIR, config_keys, did_you_mean, trainer_arguments
from srn_lightning.errors import RunFailed, UserError, first_line, reason
from srn_lightning.resume import resume_argv
from srn_lightning.train import run, stop_interrupted

log = logging.getLogger("srn_lightning.train")  # the run's lines and the job's, one logger


def record_failure(cfg: DictConfig, run_dir: Path, err: Exception) -> str:
    """A failed job is a result too: metrics.json says so, so a sweep report has its row. A
    metrics.json that a finished run left, or that the run wrote for this failure (`RunFailed`),
    is never overwritten. Returns the reason."""
    if isinstance(err, RunFailed):
        return err.reason
    why = reason(err)
    try:
        finished = record.read_metrics(run_dir)["status"] == "completed"
    except (OSError, ValueError):
        finished = False
    if not finished:
        record.write_or_log(run_dir, record.failed_metrics(cfg, why))
    return why


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
    if job_process.wanted(hydra_cfg):  # a joblib worker: the job runs in a child process it waits for
        return job_process.run_alone(lambda: main.__wrapped__(cfg), cfg, run_dir)
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
                why = record_failure(cfg, run_dir, err)
                line = None if in_sweep else one_line(err)
                log.error("job failed (overrides: %s): %s", " ".join(hydra_cfg.overrides.task), why,
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

    console.steady_streams()  # before Hydra points its console handler at stdout
    console.exit_without_final_collection()  # a sweep's launching process too: it draws the report
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
    except (JobInterrupted, job_process.JobKilled) as err:  # a sweep's job stopped or killed: its record
        sys.exit(f"error: {err}")
    except BrokenProcessPool as err:  # joblib's pool, after one of its workers was killed
        job_process.wait_for_jobs(interrupts.launched_sweep())  # the killed worker's job: its record
        sys.exit(f"error: a worker process of the sweep died ({type(err).__name__}: "
                 f"{first_line(err)}); its job stopped with its record, the pool stopped the other "
                 "workers' jobs without one (resume= continues each from its last checkpoint) and "
                 "ran no further job")
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
