"""The config's schema and its rules: the dataclasses give every key its type, RULES says what each
checked key allows. A bad value stops the run before any work, with one line that names the key and
what is allowed, and that line comes from the same rule as the check.

A new key is: a field here (and a rule if its type does not say all), a line in conf/, a row in the
README's config table.
"""

from __future__ import annotations

import difflib
import math
import os
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from srn_lightning.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # the YAML: conf/config.yaml and its groups
MIN_LENGTH = 3  # two digits to add, then at least one of noise
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


class ClipMode(StrEnum):
    none = "none"
    norm = "norm"
    value = "value"
    norm_each = "norm_each"


class Reduction(StrEnum):
    sum = "sum"
    mean = "mean"


class Cell(StrEnum):
    srn = "srn"
    lstm = "lstm"
    gru = "gru"


class OptimizerName(StrEnum):
    sgd = "sgd"
    adam = "adam"


@dataclass
class ClipConfig:
    mode: ClipMode = ClipMode.none
    val: Optional[float] = None


@dataclass
class ModelConfig:
    cell: Cell = Cell.srn
    input_size: int = 32
    hidden_size: int = 32


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.sgd


@dataclass
class DataConfig:
    dir: str = "data"
    regenerate: bool = False
    num_workers: int = 0


@dataclass
class Config:
    """Types of every key; conf/config.yaml holds the values. Hydra rejects a key that is not here
    and a value of the wrong type when it composes the config."""

    clip: ClipConfig = field(default_factory=ClipConfig)
    trainer: dict[str, Any] = field(default_factory=dict)  # any lightning.pytorch.Trainer argument
    length: int = 20
    lr: float = 0.2
    seed: int = 0
    reduction: Reduction = Reduction.sum
    weight_decay: float = 0.0
    batch_size: int = 64
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    grad_time: bool = True  # dL/dh_t at every position and sigma_max(U), every step
    plot_steps: int = 40  # the clip presets set it: the book shows 40 steps without clipping, 100 with
    resume: Optional[str] = None
    threads: Optional[int] = None
    sweep_add: bool = False  # a multirun into a sweep dir that holds jobs: add to it, numbered after them
    verbose: bool = False


ConfigStore.instance().store(name="schema", node=Config)

MAX_DIR_NAME = 240  # bytes; file systems allow 255 in a name
# What a sweep added to another (sweep_add=true) numbers its jobs from: set where the sweep starts,
# inherited by the processes that run its jobs (joblib workers, submitit jobs).
JOB_OFFSET_ENV = "SRN_SWEEP_FIRST_JOB"


def job_dir_name(*, _root_) -> str:
    """A sweep job's dir name, `<job number>_<its overrides>` (hydra.sweep.subdir in conf/), cut
    to a length every file system takes: a name too long keeps its head and gets a hash of the
    whole, so it stays readable and unique."""
    import hashlib

    job = _root_.hydra.job
    name = f"{job.num + int(os.environ.get(JOB_OFFSET_ENV, '0'))}_{job.override_dirname}"
    raw = name.encode()
    if len(raw) <= MAX_DIR_NAME:
        return name
    digest = "_" + hashlib.sha256(raw).hexdigest()[:10]
    return raw[: MAX_DIR_NAME - len(digest)].decode(errors="ignore") + digest


OmegaConf.register_new_resolver("job_dir_name", job_dir_name, replace=True)


def is_number(x) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_list(x) -> bool:
    from omegaconf import ListConfig

    return isinstance(x, (list, tuple, ListConfig))


def _fraction_or_count(x) -> bool:
    """A Trainer `limit_*_batches`: a count of batches (>= 1) or a share (0, 1] of them; 0 would
    leave a run without training steps, or without the dev accuracy its best checkpoint is picked by."""
    return (_int(x) and x >= 1) or (is_number(x) and 0 < x <= 1)


def _choices(enum) -> str:
    return " or ".join(enum) if len(enum) == 2 else ", ".join(enum)


class Rule(NamedTuple):
    key: str  # dotted, as typed on the command line
    ok: Callable[[Any, Any], bool]  # (value, whole config) -> allowed?
    allowed: str  # what the one-line error says the key must be


RULES = [
    Rule("length", lambda v, c: _int(v) and v >= MIN_LENGTH,
         f"an integer >= {MIN_LENGTH} (two digits to add, then noise)"),
    Rule("lr", lambda v, c: is_number(v) and v > 0, "a finite number > 0"),
    Rule("seed", lambda v, c: _int(v) and 0 <= v <= MAX_SEED, f"an integer in 0..{MAX_SEED}"),
    Rule("reduction", lambda v, c: v in list(Reduction), _choices(Reduction)),
    Rule("weight_decay", lambda v, c: is_number(v) and v >= 0, "a finite number >= 0"),
    Rule("batch_size", lambda v, c: _int(v) and v >= 1, "an integer >= 1"),
    Rule("model.cell", lambda v, c: v in list(Cell), _choices(Cell)),
    Rule("optimizer.name", lambda v, c: v in list(OptimizerName), _choices(OptimizerName)),
    Rule("grad_time", lambda v, c: isinstance(v, bool), "true or false"),
    Rule("verbose", lambda v, c: isinstance(v, bool), "true or false"),
    Rule("sweep_add", lambda v, c: isinstance(v, bool), "true or false"),
    Rule("model.input_size", lambda v, c: _int(v) and v >= 1, "an integer >= 1"),
    Rule("model.hidden_size", lambda v, c: _int(v) and v >= 1, "an integer >= 1"),
    Rule("clip.mode", lambda v, c: v in list(ClipMode), _choices(ClipMode)),
    Rule("clip.val", lambda v, c: v is None if c.clip.mode == ClipMode.none else is_number(v) and v > 0,
         "a finite number > 0 with clip=norm, value or norm_each, null with clip=none"),
    Rule("plot_steps", lambda v, c: _int(v) and v >= 1, "an integer >= 1"),
    Rule("data.num_workers", lambda v, c: _int(v) and v >= 0, "an integer >= 0"),
    Rule("trainer.max_epochs", lambda v, c: "max_epochs" not in c.trainer or (_int(v) and v >= 1),
         "an integer >= 1"),
    Rule("threads", lambda v, c: v is None or (_int(v) and v >= 1),
         "an integer >= 1 (null: chosen for the launcher)"),
    # The grad-norm record is per process: more than one device or node would need a record that
    # gathers them, which the project does not have.
    Rule("trainer.devices", lambda v, c: v == 1 or v == "1" or (_is_list(v) and len(v) == 1),
         "1 or a list of one device: the grad-norm record is per process"),
    Rule("trainer.num_nodes", lambda v, c: "num_nodes" not in c.trainer or v == 1,
         "1: the grad-norm record is per process"),
    Rule("trainer.max_steps", lambda v, c: "max_steps" not in c.trainer or (_int(v) and (v == -1 or v >= 1)),
         "an integer >= 1, or -1 (no limit)"),
    *(Rule(f"trainer.{key}", lambda v, c, key=key: key not in c.trainer or _fraction_or_count(v),
           "an integer >= 1 (batches) or a number in (0, 1] (a share of them)")
      for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches")),
]
ALLOWED = {rule.key: rule.allowed for rule in RULES}

# Trainer arguments the project sets itself: a `+trainer.X=` for them would contradict the run's
# own record of what it did (clipping) or its artifacts.
RESERVED_TRAINER_KEYS = {
    "gradient_clip_val": "set by clip.val",
    "gradient_clip_algorithm": "set by clip=",
    "logger": "the run's TensorBoard logger is the project's",
    "callbacks": "the run's callbacks are the project's",
    "default_root_dir": "the run dir is hydra.run.dir",
    "enable_checkpointing": "checkpoints are kept for the best-on-dev test and resume",
    "accumulate_grad_batches": "the grad norms are recorded per optimizer step, one batch each",
}


class ConfigError(UserError, ValueError):
    """A config value that is not allowed; str() is the one line to show."""

    def __init__(self, key: str, value: Any, allowed: str | None = None) -> None:
        self.key, self.value, self.allowed = key, str(value), allowed or ALLOWED[key]
        super().__init__(f"{key}={value}: not allowed; {key} must be {self.allowed}")

    def __reduce__(self):  # crosses a process boundary (a joblib worker's job) intact
        return type(self), (self.key, self.value, self.allowed)


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node


def validate(cfg) -> None:
    """Value checks the types cannot express. Raises ConfigError for the first bad key."""
    for rule in RULES:
        value = _get(cfg, rule.key)
        if not rule.ok(value, cfg):
            raise ConfigError(rule.key, value)
    for key, why in RESERVED_TRAINER_KEYS.items():
        if key in cfg.trainer and not (key == "accumulate_grad_batches" and cfg.trainer[key] == 1):
            raise ConfigError(f"trainer.{key}", cfg.trainer[key], f"left out: {why}")
    files = [Path(cfg.data.dir) / str(cfg.length) / f"{s}.txt" for s in ("train", "dev", "test")]
    if cfg.data.regenerate or not all(f.exists() for f in files):
        check_writable_dir(cfg.data.dir, "data.dir")


def check_trainer_keys(trainer_cfg) -> None:
    """Keys added with `+trainer.x=...` must be Trainer arguments, and the accelerator one this
    machine has (imports Lightning)."""
    known = _trainer_arguments()
    for key in trainer_cfg:
        if key not in known:
            raise ConfigError(f"trainer.{key}", trainer_cfg[key], f"a Trainer argument{_did_you_mean(key, known)}")
    check_accelerator(trainer_cfg.get("accelerator", "auto"))


def check_accelerator(accelerator) -> None:
    """cpu, auto, or gpu/cuda where torch sees a CUDA GPU: the ones this project runs on."""
    import torch

    cuda = torch.cuda.is_available()
    if accelerator in ("cpu", "auto") or (accelerator in ("gpu", "cuda") and cuda):
        return
    raise ConfigError("trainer.accelerator", accelerator, "cpu, auto, or gpu (cuda) on a machine with a "
                      f"CUDA GPU ({'this one has one' if cuda else 'this one has none'})")


def _trainer_arguments() -> set[str]:
    import inspect

    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_writable_dir(path, key: str) -> None:
    """`path` is a directory that exists or can be created, and can be written to: tried for real
    (root passes every permission check, a read-only or virtual file system does not)."""
    p = Path(path).absolute()
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as err:
        raise ConfigError(key, path, f"a directory that can be created and written ({err.strerror})") from None


def check_fresh_run_dir(run_dir, resume) -> None:
    """A run never writes over another run's artifacts, except when it is that run, resumed."""
    p = Path(run_dir)
    if resume is None and any((p / name).exists() for name in ("metrics.json", "grad_norms.csv")):
        raise ConfigError(
            "hydra.run.dir", run_dir, f"a new directory: this one holds a run; continue it with resume={p}"
        )


def first_job_number(sweep_dir, add: bool) -> int:
    """The number a sweep's first job gets in `sweep_dir`: 0 in a new dir; after the jobs already
    there with `sweep_add=true` (so numbers stay unique in the report); a dir that holds jobs is
    refused otherwise, as two sweeps' jobs would mix in one report unasked."""
    from srn_lightning.report import UNNUMBERED, find_jobs

    nums = [n for n, _ in find_jobs(sweep_dir)]
    if nums and not add:
        raise ConfigError("hydra.sweep.dir", sweep_dir, f"a new directory: this one holds the "
                          f"{len(nums)} jobs of another sweep; add to them with sweep_add=true")
    numbered = [n for n in nums if n != UNNUMBERED]
    return max(numbered) + 1 if numbered else len(nums)


class CheckConfig(Callback):
    """Hydra callback: checks a run's config, and the output dir of a run or sweep, before Hydra
    creates that dir. Hydra turns an exception in a callback into a warning and goes on, so a bad
    config exits here, with its one line."""

    def on_run_start(self, config, **kwargs) -> None:
        from srn_lightning import locks

        run_dir = config.hydra.run.dir
        try:
            validate(config)
            locks.check_free(run_dir)  # a dir another process writes: its pid, before anything else
            check_fresh_run_dir(run_dir, config.resume)
            check_writable_dir(run_dir, "hydra.run.dir")
            check_trainer_keys(config.trainer)  # it imports Lightning: after the quick checks
            from srn_lightning.train import check_resume

            check_resume(config, run_dir)  # the checkpoint fits the run: refused before Hydra writes the dir
            locks.hold(run_dir)  # for the whole process: before Hydra writes the dir's first file
        except UserError as err:
            raise SystemExit(f"error: {err}") from None
        except Exception as err:  # a check that broke must still stop the run, not be a warning
            raise SystemExit(f"error: config check failed: {type(err).__name__}: {err}") from None

    def on_multirun_start(self, config, **kwargs) -> None:
        # each job's values are checked in the job: a bad one fails that job, not the sweep
        from srn_lightning import locks

        sweep_dir = config.hydra.sweep.dir
        try:
            check_writable_dir(sweep_dir, "hydra.sweep.dir")
            locks.hold(sweep_dir)  # for the launching process's lifetime
            os.environ[JOB_OFFSET_ENV] = str(first_job_number(sweep_dir, config.sweep_add))
        except UserError as err:
            raise SystemExit(f"error: {err}") from None


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
        from omegaconf import OmegaConf

        if key.startswith("trainer."):
            if key.removeprefix("trainer.") in _trainer_arguments():
                return f"{key}: not in the config yet; add it with +{key}=..."
            known = [f"trainer.{k}" for k in _trainer_arguments()]
        else:
            known = _flat_keys(OmegaConf.structured(Config))
        return f"{key}: no such config key{_did_you_mean(key, known)}; keys are listed in the README"
    if isinstance(err, ConfigCompositionException) and isinstance(cause, ValidationError):
        key = cause.full_key
        got = getattr(cause, "value", None)
        allowed = ALLOWED.get(key) or str(cause).splitlines()[0]
        return f"{key}={got}: not allowed; {key} must be {allowed}"
    if isinstance(err, (OverrideParseException, ConfigCompositionException)):
        return str(err).strip().splitlines()[0]
    return None


def _flat_keys(node, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    keys = []
    for k in node:
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(node[k], DictConfig):
            keys.extend(_flat_keys(node[k], full + "."))
    return keys
