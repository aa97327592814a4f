"""The checks before a run or a sweep creates anything: the config's values (config.validate), the
Trainer's arguments, the run, data and sweep dirs, the checkpoint a resume continues from; and the
numbering of a sweep's jobs. Every check only looks: nothing (no dir, no file) is created until
they have all passed.

`CheckConfig` is the Hydra callback that runs them before Hydra makes a run's or a sweep's dir;
`check_job` runs those of one job, where no callback ran before it (a sweep's job, the Python API).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from srn_lightning import locks, report_jobs, resume
from srn_lightning.config import ConfigError, did_you_mean, trainer_arguments, validate
from srn_lightning.errors import UserError

MAX_DIR_NAME = 240  # bytes; file systems allow 255 in a name
# What a sweep added to another (sweep_add=true) numbers its jobs from: set where the sweep starts,
# inherited by the processes that run its jobs (joblib workers, submitit jobs).
JOB_OFFSET_ENV = "SRN_SWEEP_FIRST_JOB"


# ---- one job: its values, its Trainer, its data dir, its checkpoint -----------------------------

def check_job(cfg, run_dir) -> None:
    """Everything a job's config must pass before the job creates anything; the run dir itself is
    `check_run_dir`'s (a sweep's job dirs are Hydra's, made before the job starts)."""
    validate(cfg)
    check_data_dir(cfg)
    check_trainer_keys(cfg.trainer)  # it imports Lightning: after the quick checks
    resume.check_resume(cfg, run_dir)  # the checkpoint fits the run


def check_trainer_keys(trainer_cfg) -> None:
    """Keys added with `+trainer.x=...` must be Trainer arguments, and the accelerator one this
    machine has (imports Lightning)."""
    known = trainer_arguments()
    for key in trainer_cfg:
        if key not in known:
            raise ConfigError(f"trainer.{key}", trainer_cfg[key], f"a Trainer argument{did_you_mean(key, known)}")
    check_accelerator(trainer_cfg.get("accelerator", "auto"))


def check_accelerator(accelerator) -> None:
    """cpu, auto, or gpu/cuda where torch sees a CUDA GPU: the ones this project runs on."""
    import torch

    cuda = torch.cuda.is_available()
    if accelerator in ("cpu", "auto") or (accelerator in ("gpu", "cuda") and cuda):
        return
    raise ConfigError("trainer.accelerator", accelerator, "cpu, auto, or gpu (cuda) on a machine with a "
                      f"CUDA GPU ({'this one has one' if cuda else 'this one has none'})")


def check_data_dir(cfg) -> None:
    """The data dir can take the book's files of the run's length, where they are still to be
    written (relative to where the run was launched, as the run reads them)."""
    files = [Path(cfg.data.dir) / str(cfg.length) / f"{s}.txt" for s in ("train", "dev", "test")]
    if cfg.data.regenerate or not all(f.exists() for f in files):
        check_writable_dir(cfg.data.dir, "data.dir")


def check_writable_dir(path, key: str) -> None:
    """`path` is a directory that exists, or can be created, and can be written to: tried for real
    (root passes every permission check, a read-only or virtual file system does not), in the
    nearest directory that exists, with a file that has no name (or is gone at once): nothing is
    left behind, and nothing is created."""
    p = Path(path).absolute()
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(key, path, f"a directory that can be created and written ({err.strerror})") from None


def check_fresh_run_dir(run_dir, resume_target) -> None:
    """A run never writes over another run's artifacts, except when it is that run, resumed."""
    p = Path(run_dir)
    if resume_target is None and any((p / name).exists() for name in ("metrics.json", "grad_norms.csv")):
        raise ConfigError(
            "hydra.run.dir", run_dir, f"a new directory: this one holds a run; continue it with resume={p}"
        )


def check_run_dir(run_dir, resume_target) -> None:
    """A single run's dir: no other process writes it, it holds no other run, it can be written."""
    locks.check_free(run_dir)  # a dir another process writes: its pid, before anything else
    check_fresh_run_dir(run_dir, resume_target)
    check_writable_dir(run_dir, "hydra.run.dir")


# ---- a sweep: its dir and the numbers of its jobs -----------------------------------------------

def first_job_number(sweep_dir, add: bool) -> int:
    """The number a sweep's first job gets in `sweep_dir`: 0 in a new dir; after the jobs already
    there with `sweep_add=true` (so numbers stay unique in the report); a dir that holds jobs is
    refused otherwise, as two sweeps' jobs would mix in one report unasked."""
    nums = [n for n, _ in report_jobs.find_jobs(sweep_dir)] if Path(sweep_dir).is_dir() else []
    if nums and not add:
        raise ConfigError("hydra.sweep.dir", sweep_dir, f"a new directory: this one holds the "
                          f"{len(nums)} jobs of another sweep; add to them with sweep_add=true")
    numbered = [n for n in nums if n != report_jobs.UNNUMBERED]
    return max(numbered) + 1 if numbered else len(nums)


def job_dir_name(*, _root_) -> str:
    """A sweep job's dir name, `<job number>_<its overrides>` (hydra.sweep.subdir in conf/), cut
    to a length every file system takes: a name too long keeps its head and gets a hash of the
    whole, so it stays readable and unique."""
    job = _root_.hydra.job
    name = f"{job.num + int(os.environ.get(JOB_OFFSET_ENV, '0'))}_{job.override_dirname}"
    raw = name.encode()
    if len(raw) <= MAX_DIR_NAME:
        return name
    digest = "_" + hashlib.sha256(raw).hexdigest()[:10]
    return raw[: MAX_DIR_NAME - len(digest)].decode(errors="ignore") + digest


OmegaConf.register_new_resolver("job_dir_name", job_dir_name, replace=True)


# ---- the Hydra callback ------------------------------------------------------------------------

class CheckConfig(Callback):
    """Hydra callback: checks a run's config, and the output dir of a run or sweep, before Hydra
    creates that dir; the run's dir is held (locks) only once every check has passed. Hydra turns
    an exception in a callback into a warning and goes on, so a bad config exits here, with its
    one line."""

    def on_run_start(self, config, **kwargs) -> None:
        run_dir = config.hydra.run.dir
        try:
            check_run_dir(run_dir, config.resume)
            check_job(config, run_dir)
            locks.hold(run_dir)  # for the whole process: before Hydra writes the dir's first file
        except UserError as err:
            raise SystemExit(f"error: {err}") from None
        except Exception as err:  # a check that broke must still stop the run, not be a warning
            raise SystemExit(f"error: config check failed: {type(err).__name__}: {err}") from None

    def on_multirun_start(self, config, **kwargs) -> None:
        # each job's values are checked in the job: a bad one fails that job, not the sweep
        sweep_dir = config.hydra.sweep.dir
        try:
            check_writable_dir(sweep_dir, "hydra.sweep.dir")
            first = first_job_number(sweep_dir, config.sweep_add)
            locks.hold(sweep_dir)  # for the launching process's lifetime
            os.environ[JOB_OFFSET_ENV] = str(first)
        except UserError as err:
            raise SystemExit(f"error: {err}") from None
