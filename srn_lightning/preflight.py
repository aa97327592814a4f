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

import hydra
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from srn_lightning import locks, report_jobs, resume
from srn_lightning.config import ConfigError, did_you_mean, trainer_arguments, validate
from srn_lightning.errors import UserError, first_line

MAX_DIR_NAME = 240  # bytes; file systems allow 255 in a name
JOB_OFFSET_ENV = resume.JOB_OFFSET_ENV  # the number a sweep's first job gets in its dir


# ---- one job: its values, its Trainer, its data dir, its checkpoint -----------------------------

def check_job(cfg, run_dir) -> None:
    """Everything a job's config must pass before the job creates anything; the run dir itself is
    `check_run_dir`'s (a sweep's job dirs are Hydra's, made before the job starts)."""
    validate(cfg)
    check_batches(cfg)
    check_data_dir(cfg)
    check_trainer_keys(cfg.trainer)  # it imports Lightning: after the quick checks
    resume.check_resume(cfg, run_dir)  # the checkpoint fits the run


def check_trainer_keys(trainer_cfg) -> None:
    """Keys added with `+trainer.x=...` must be Trainer arguments, the accelerator one this machine
    has, and the whole set one Lightning accepts (imports Lightning)."""
    known = trainer_arguments()
    for key in trainer_cfg:
        if key not in known:
            raise ConfigError(f"trainer.{key}", trainer_cfg[key], f"a Trainer argument{did_you_mean(key, known)}")
    check_accelerator(trainer_cfg.get("accelerator", "auto"))
    try_trainer(trainer_cfg)


def try_trainer(trainer_cfg) -> None:
    """Builds a Trainer from the run's arguments (without the run's logger, callbacks and dirs, which
    the project sets): what Lightning refuses (a precision, a plugin, a strategy it does not know) is
    refused here, in one line that names the argument, before anything is created. A Trainer that is
    only built writes nothing; its INFO lines (hardware found) and warnings are held back: the run's
    own Trainer gives them."""
    import logging
    import warnings

    from omegaconf import OmegaConf

    kwargs = trainer_cfg if isinstance(trainer_cfg, dict) else OmegaConf.to_container(trainer_cfg)
    chatty = logging.getLogger("lightning.pytorch")
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reason = _refusal(kwargs)
            # the argument to blame: the first one that Lightning refuses on its own
            blamed = [(k, why) for k in kwargs if reason and (why := _refusal({k: kwargs[k]}))]
    finally:
        chatty.setLevel(level)
    if reason is None:
        return
    if not blamed:
        raise UserError(f"trainer: Lightning refuses this set of Trainer arguments together: {reason}")
    key, why = blamed[0]
    raise ConfigError(f"trainer.{key}", kwargs[key], f"one Lightning accepts ({why})")


def _refusal(kwargs: dict) -> str | None:
    """Lightning's first line against a Trainer built from `kwargs`, shortened; None if it builds."""
    from lightning.pytorch import Trainer

    try:
        Trainer(**{**kwargs, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                   "enable_model_summary": False})
    except Exception as err:  # Lightning's own words: MisconfigurationException, ValueError, TypeError
        return first_line(err, 160)
    return None


def check_batches(cfg) -> None:
    """Every split gets at least one batch under its `limit_*_batches`, and `max_steps` reaches the
    end of the first epoch, where the dev accuracy the best checkpoint is chosen by is measured."""
    from srn_lightning.data import batches, split_batch_size  # imports torch: in a job, not in the launching process

    split_of = {"train": "train", "val": "dev", "test": "test"}
    for stage, split in split_of.items():
        key = f"limit_{stage}_batches"
        if key in cfg.trainer and batches(split, cfg.batch_size, cfg.length, cfg.trainer[key]) < 1:
            size = split_batch_size(split, cfg.batch_size, cfg.length)
            raise ConfigError(f"trainer.{key}", cfg.trainer[key], f"a share that leaves at least one batch of "
                              f"the {batches(split, cfg.batch_size, cfg.length)} of {split} (batches of {size})")
    per_epoch = batches("train", cfg.batch_size, cfg.length, cfg.trainer.get("limit_train_batches", 1.0))
    steps = cfg.trainer.get("max_steps", -1)
    if steps != -1 and steps < per_epoch:
        raise ConfigError("trainer.max_steps", steps, f"-1 or at least the {per_epoch} steps of one epoch "
                          "(the dev accuracy is measured at an epoch's end)")


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
    data_dir = Path(hydra.utils.to_absolute_path(cfg.data.dir))  # a job's working dir may be its own
    files = [data_dir / str(cfg.length) / f"{s}.txt" for s in ("train", "dev", "test")]
    if cfg.data.regenerate or not all(f.exists() for f in files):
        check_writable_dir(data_dir, "data.dir")


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
    after = max(numbered) + 1 if numbered else len(nums)
    if nums and (Path(sweep_dir) / resume.MULTIRUN_NAME).is_file():  # after the jobs not started yet too
        try:
            parts = resume.sweep_parts(Path(sweep_dir))
        except resume.ResumeError as err:
            raise ConfigError("hydra.sweep.dir", sweep_dir, f"a sweep dir whose configs can be read "
                              f"to add to it ({err})") from None
        after = max(after, *(part.first + resume.job_count(part) for part in parts))
    return after


def job_dir_name(*, _root_) -> str:
    """A sweep job's dir name, `<job number>_<its overrides>` (hydra.sweep.subdir in conf/), cut
    to a length every file system takes: a name too long keeps its head and gets a hash of the
    whole, so it stays readable and unique."""
    job = _root_.hydra.job
    name = f"{job_number(job.num)}_{job.override_dirname}"
    raw = name.encode()
    if len(raw) <= MAX_DIR_NAME:
        return name
    digest = "_" + hashlib.sha256(raw).hexdigest()[:10]
    return raw[: MAX_DIR_NAME - len(digest)].decode(errors="ignore") + digest


def job_number(num: int) -> int:
    """A sweep job's number as its dir and its console lines show it: Hydra's, after the jobs of
    the sweeps added to before it."""
    return num + int(os.environ.get(JOB_OFFSET_ENV, "0"))


def keep_multirun_history(sweep_dir) -> None:
    """A sweep dir's multirun.yaml, which Hydra is about to replace with the config of a sweep
    continued or added there, kept as multirun.<n>.yaml (n = 1, 2, ...: oldest first)."""
    import shutil

    current = Path(sweep_dir) / "multirun.yaml"
    if current.is_file() and not current.is_symlink():
        n = 1
        while (current.parent / f"multirun.{n}.yaml").exists():
            n += 1
        shutil.copyfile(current, current.parent / f"multirun.{n}.yaml")


def save_sweep_config(config, sweep_dir, first: int) -> None:
    """The sweep's multirun.yaml, with the number of its first job in its jobs' environment
    (hydra.job.env_set, where resume=SWEEP_DIR reads it: the jobs get it from this process).
    Hydra's basic sweeper writes the file too, the same, as it starts; a search's (Optuna's) does
    not, and a search is continued from it too."""
    from omegaconf import open_dict

    from srn_lightning.files import write_atomic

    with open_dict(config.hydra.job.env_set):
        config.hydra.job.env_set[JOB_OFFSET_ENV] = str(first)
    write_atomic(Path(sweep_dir) / resume.MULTIRUN_NAME, OmegaConf.to_yaml(config))


OmegaConf.register_new_resolver("job_dir_name", job_dir_name, replace=True)


def check_slurm_limit(launcher) -> None:
    """A Slurm job is told its time is up (USR2) `signal_delay_s` before its limit (`timeout_min`):
    a delay as long as the limit tells it as it starts, before it can finish an epoch, at every
    attempt, until submitit gives up (`max_num_timeout`)."""
    if "slurm" not in str(launcher.get("_target_", "")).lower():
        return
    limit, delay = launcher.get("timeout_min"), launcher.get("signal_delay_s")
    if isinstance(limit, int) and isinstance(delay, int) and delay >= limit * 60:
        raise ConfigError("hydra.launcher.signal_delay_s", delay, f"shorter than the job's time limit "
                          f"(hydra.launcher.timeout_min={limit}: {limit * 60} s), or each attempt is told "
                          "its time is up as it starts")


def check_slurm_answers(launcher, timeout: float = 20.0) -> None:
    """A sweep for a Slurm launcher (submitit's or the project's) needs a controller that answers:
    `scontrol ping`, bounded in time, before the sweep dir exists (sbatch would fail with a
    traceback after it)."""
    import shutil
    import subprocess

    if "slurm" not in str(launcher.get("_target_", "")).lower():
        return
    why = None
    if shutil.which("scontrol") is None:
        why = "no scontrol on the PATH: this machine is not a Slurm login node"
    else:
        try:
            ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout)
            if ping.returncode != 0 or "UP" not in ping.stdout:
                said = [ln.strip() for ln in (ping.stdout + ping.stderr).splitlines() if ln.strip()]
                why = f"scontrol ping: {said[0][:120] if said else f'exit status {ping.returncode}'}"
        except subprocess.TimeoutExpired:
            why = f"scontrol ping got no answer in {timeout:.0f} s"
    if why:
        raise UserError(f"hydra/launcher=slurm: no Slurm controller answers ({why}); run the sweep on a "
                        "cluster's login node, or with hydra/launcher=joblib on this machine")


# ---- the Hydra callback ------------------------------------------------------------------------

class CheckConfig(Callback):
    """Hydra callback: checks a run's config, and the output dir of a run or sweep, before Hydra
    creates that dir; the run's dir is held (locks) only once every check has passed. Hydra turns
    an exception in a callback into a warning and goes on, so a bad config exits here, with its
    one line."""

    def on_run_start(self, config, **kwargs) -> None:
        run_dir = config.hydra.run.dir
        try:
            if config.hydra.output_subdir != ".hydra":
                raise ConfigError("hydra.output_subdir", config.hydra.output_subdir, ".hydra (left as it is): "
                                  "a run keeps its config there, and resume= reads it")
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
            n_jobs = config.hydra.launcher.get("n_jobs", 1)
            if not (isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and n_jobs != 0):
                raise ConfigError("hydra.launcher.n_jobs", n_jobs, "a non-zero integer (negative: that many "
                                  "fewer than the cores plus one, as joblib counts)")
            check_slurm_limit(config.hydra.launcher)
            check_slurm_answers(config.hydra.launcher)
            check_writable_dir(sweep_dir, "hydra.sweep.dir")
            continues = os.environ.get(resume.CONTINUE_ENV)  # resume=SWEEP_DIR: its own jobs, again
            first = int(continues) if continues else first_job_number(sweep_dir, config.sweep_add)
            locks.hold(sweep_dir)  # for the launching process's lifetime
            os.environ[JOB_OFFSET_ENV] = str(first)
            keep_multirun_history(sweep_dir)
            save_sweep_config(config, sweep_dir, first)
        except UserError as err:
            raise SystemExit(f"error: {err}") from None
