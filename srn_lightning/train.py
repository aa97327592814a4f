"""Train the book's SRN from a Hydra config: fit, test the best-on-dev checkpoint, write artifacts.

    python -m srn_lightning.train clip=none
    python -m srn_lightning.train -m clip=norm,value,none length=10,20
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from srn_lightning.config import check_trainer_keys, explain, validate
from srn_lightning.errors import UserError
from srn_lightning.files import write_atomic
from srn_lightning.resume import resume_argv

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def trainer_clip_kwargs(clip: DictConfig) -> dict:
    """Lightning clips `norm` (global) and `value` itself; `norm_each` is the module's own."""
    if clip.mode in ("norm", "value"):
        return {"gradient_clip_val": clip.val, "gradient_clip_algorithm": clip.mode}
    return {}


def config_summary(cfg: DictConfig) -> dict:
    """The config keys a run is known by, as they appear in metrics.json and sweep reports."""
    return {
        "clip_mode": cfg.clip.mode,
        "clip_val": cfg.clip.val,
        "length": cfg.length,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "reduction": cfg.reduction,
        "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size,
        "hidden_size": cfg.model.hidden_size,
    }


def hparams(cfg: DictConfig) -> dict:
    """The flat hyper-parameters every run logs to TensorBoard's HParams tab. The same keys and
    types in every run, so the table and parallel coordinates line up across a sweep: no clipping is
    threshold 0.0, which is also how Lightning's `gradient_clip_val` says "off"."""
    return {
        **config_summary(cfg),
        "clip_val": float(cfg.clip.val or 0.0),
        "input_size": cfg.model.input_size,
        "max_epochs": cfg.trainer.max_epochs,
    }


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


def write_metrics(run_dir, metrics: dict) -> None:
    write_atomic(Path(run_dir) / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False) + "\n")


def run(cfg: DictConfig, run_dir, callbacks=()) -> dict:
    """One run in `run_dir`: returns the metrics it also writes to `run_dir/metrics.json`.
    `callbacks` are added to the project's own (handy for notebooks and tests).

    status "completed"; "diverged" (NaN/Inf: a result, with the step, the best checkpoint before it
    tested); "interrupted" (SIGINT/SIGTERM: last.ckpt holds the last completed epoch; raises
    SystemExit after writing metrics.json).
    """
    validate(cfg)
    check_trainer_keys(cfg.trainer)
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from srn_lightning.callbacks import TRACKED, Diverged, GradNormMonitor, read_grad_norms
    from srn_lightning.data import DigitSumDataModule
    from srn_lightning.module import SRNClassifier

    run_dir = Path(run_dir)
    seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = DigitSumDataModule(
        hydra.utils.to_absolute_path(cfg.data.dir), cfg.length, cfg.batch_size, cfg.seed,
        cfg.data.num_workers, cfg.data.regenerate,
    )
    module = SRNClassifier(
        input_size=cfg.model.input_size, hidden_size=cfg.model.hidden_size, lr=cfg.lr,
        weight_decay=cfg.weight_decay, reduction=cfg.reduction, clip_mode=cfg.clip.mode,
        clip_val=cfg.clip.val,
    )
    clip_name = cfg.clip.mode if cfg.clip.val is None else f"{cfg.clip.mode} {cfg.clip.val}"
    checkpoint = ModelCheckpoint(  # the best on dev, tested at the end
        dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:02d}", monitor="val/acc",
        mode="max", auto_insert_metric_name=False,
    )
    # Every epoch's end, for resume. (save_last=True above would not do: Lightning 2.6 writes
    # last.ckpt only when it also writes a best one, so it would hold the best epoch, not the last.)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1)
    monitor = GradNormMonitor(
        run_dir, plot_steps=cfg.plot_steps,
        title=f"clip={clip_name}, length={cfg.length}, lr={cfg.lr}, seed={cfg.seed}",
    )
    trainer = Trainer(
        **cfg.trainer,
        default_root_dir=run_dir,
        logger=TensorBoardLogger(run_dir, name="tb", version="", default_hp_metric=False),
        callbacks=[checkpoint, last, monitor, *callbacks],
        **trainer_clip_kwargs(cfg.clip),
    )

    status, extra = "completed", {}
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.resume, weights_only=True)
    except Diverged as err:
        status, extra = "diverged", {"diverged_step": err.step}
        log.warning("diverged: %s; stopped, artifacts kept", err)
    except SystemExit:  # Lightning turns Ctrl-C and SIGTERM into SystemExit after a graceful stop
        if not trainer.interrupted:
            raise
        epochs_done = trainer.current_epoch  # epochs whose end (and last.ckpt) was reached
        monitor.draw(trainer)
        trainer.logger.finalize("failed")  # as Lightning does on an interrupt
        write_metrics(run_dir, {
            "status": "interrupted", **config_summary(cfg), "epochs": epochs_done,
            "steps": trainer.global_step,
            "resume": f"python -m srn_lightning.train resume={run_dir}",
        })
        raise SystemExit(
            f"interrupted after {epochs_done} completed epochs; continue with: "
            f"python -m srn_lightning.train resume={run_dir}"
        ) from None
    fit_seconds = time.perf_counter() - start

    finished = False
    try:
        test_acc = None
        # a diverged run may have stopped before its first validation: then there is no best
        if checkpoint.best_model_path:
            (test,) = trainer.test(module, datamodule=datamodule, verbose=False,
                                   ckpt_path=checkpoint.best_model_path, weights_only=True)
            test_acc = test["test/acc"]
        monitor.draw(trainer)

        norms = read_grad_norms(monitor.csv_path)
        best = checkpoint.best_model_score
        metrics = {
            "status": status,
            **extra,
            **config_summary(cfg),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "dev_best": None if best is None else float(best),
            "best_checkpoint": Path(checkpoint.best_model_path).name or None,
            "test_acc": test_acc,
            **{f"{n}_pre_max": max(_finite(norms[n]), default=None) for n in TRACKED},
            **{f"{n}_pre_last": (_finite(norms[n]) or [None])[-1] for n in TRACKED},
            "fit_seconds": round(fit_seconds, 3),
        }
        # the same metrics in every run (NaN where a diverged run has none): HParams rows line up
        trainer.logger.log_hyperparams(hparams(cfg), {
            f"hparams/{k}": float("nan") if metrics[k] is None else metrics[k]
            for k in ("test_acc", "dev_best", "W_pre_max", "total_pre_max")
        })
        finished = True
    finally:
        # the figure and HParams events written after test: flushed and closed here, not left to
        # the process's exit ("success" also rewrites the logger's hparams.yaml)
        trainer.logger.finalize("success" if finished else "failed")
    write_metrics(run_dir, metrics)
    return metrics


def _finite(values) -> list:
    """A diverged run's last row holds NaN or Inf: metrics.json reports the finite values only."""
    return [v for v in values if math.isfinite(v)]


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns best dev accuracy, the metric a sweeper maximizes (0 if none)."""
    import lightning
    from hydra.core.hydra_config import HydraConfig

    # Hydra's handlers (console and the run's train.log) print Lightning's messages; its own console
    # handler would print each of them a second time.
    logging.getLogger(lightning.__name__).handlers.clear()
    # Everything lives in memory: worker processes would only slow a run this small down.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated")  # torch 2.13 vs Lightning 2.6
    exit_without_final_collection()  # here: this runs in every process that runs a job
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    import torch

    threads = job_threads(cfg, hydra_cfg.launcher)
    if threads:
        torch.set_num_threads(threads)
    log.info("torch threads: %d", torch.get_num_threads())
    try:
        metrics = run(cfg, run_dir)
    except Exception as err:
        # A failed job is a result too: metrics.json says so, so a sweep report has its row. A
        # metrics.json that a finished run left is never overwritten.
        reason = explain(err) or f"{type(err).__name__}: {err}"
        old = run_dir / "metrics.json"
        if not old.exists() or json.loads(old.read_text()).get("status") != "completed":
            write_metrics(run_dir, {"status": "failed", "error": reason, **config_summary(cfg)})
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
