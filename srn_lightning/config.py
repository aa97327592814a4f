"""The config's schema: every key declared once, with its type, its default, its rule and its role
(`key`). What the run's record, the sweep report, HParams and resume know of the keys is derived from
here (`RUN_KEYS`, `RESUMABLE`, `record_type`), and so are the rules (`RULES`). A bad value stops the
run before any work, with one line that names the key and what is allowed, and that line comes from
the same rule as the check.

A new key is a field here, the code that uses it, and a row in the README's config table.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from srn_lightning.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")  # the YAML, shipped in the package: conf/config.yaml and its groups
MIN_LENGTH = 3  # two digits to add, then at least one of noise
# The book's files hold 500 lines of `length` digits (2 bytes each): 100 MB at this bound, and a step
# keeps several [batch, length, hidden] tensors for backward (gigabytes at batch 64): beyond it, a
# typo (an extra zero or three) would fill the memory before it failed.
MAX_LENGTH = 100_000
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
# Widths of the embedding and the hidden state: an LSTM's U at this bound is 4096 x 16384 floats
# (256 MB, twice that with its gradient); beyond it, a typo would try to allocate tens of GB.
MAX_WIDTH = 4096


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


class Role(StrEnum):
    """What a key is to a run."""

    run = "run"  # what the run is: in metrics.json, the sweep report and HParams; a resume keeps it
    resumable = "resumable"  # how the run is carried out, and a resume may change it
    operate = "operate"  # how the run is carried out, kept for its whole life (resumes too)


def key(default=MISSING, *, role: Role, ok: Callable[[Any, Any], bool] | None = None, allowed: str = "",
        name: str | None = None, factory=None, names_job_dir: bool = True):
    """A key of the schema: its default (MISSING: the config group's option sets it), its role, its
    rule (`ok(value, whole config)`, with the words `allowed` that the one-line error says), its
    name in the run's record (the key's last part unless given), and whether a sweep job's dir name
    shows it when the job overrides it (False: a path, or what only operates the run's process)."""
    metadata = {"role": role, "ok": ok, "allowed": allowed, "name": name, "names_job_dir": names_job_dir}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


BOOL = {"ok": lambda v, c: isinstance(v, bool), "allowed": "true or false"}
AT_LEAST_1 = {"ok": lambda v, c: _int(v) and v >= 1, "allowed": "an integer >= 1"}
WIDTH = {"ok": lambda v, c: _int(v) and 1 <= v <= MAX_WIDTH, "allowed": f"an integer in 1..{MAX_WIDTH}"}


@dataclass
class ClipConfig:  # set by the clip preset, conf/clip/
    mode: ClipMode = key(role=Role.run, name="clip_mode", ok=lambda v, c: v in list(ClipMode),
                         allowed=_choices(ClipMode))
    val: Optional[float] = key(
        role=Role.run, name="clip_val",
        ok=lambda v, c: v is None if c.clip.mode == ClipMode.none else is_number(v) and v > 0,
        allowed="a finite number > 0 with clip=norm, value or norm_each, null with clip=none")


@dataclass
class ModelConfig:
    cell: Cell = key(role=Role.run, ok=lambda v, c: v in list(Cell), allowed=_choices(Cell))  # conf/model/
    input_size: int = key(32, role=Role.run, **WIDTH)  # embedding size of a digit
    hidden_size: int = key(32, role=Role.run, **WIDTH)


@dataclass
class OptimizerConfig:
    name: OptimizerName = key(role=Role.run, name="optimizer", ok=lambda v, c: v in list(OptimizerName),
                              allowed=_choices(OptimizerName))  # conf/optimizer/


@dataclass
class DataConfig:
    dir: str = key("data", role=Role.resumable, names_job_dir=False)  # relative to where the run is launched
    regenerate: bool = key(False, role=Role.operate, names_job_dir=False)  # true: rewrite the files from the generator
    num_workers: int = key(0, role=Role.resumable, ok=lambda v, c: _int(v) and v >= 0,
                           allowed="an integer >= 0", names_job_dir=False)


@dataclass
class Config:
    """Every key of the config, declared once: its type, its default, its rule and its role. The
    YAML in conf/ chooses the group options and holds the presets; Hydra rejects a key that is not
    here and a value of the wrong type when it composes the config, `validate` the rest."""

    clip: ClipConfig = key(role=Role.run, factory=ClipConfig)
    trainer: dict[str, Any] = key(role=Role.operate, factory=dict)  # any Trainer argument: conf/trainer/
    length: int = key(20, role=Role.run, ok=lambda v, c: _int(v) and MIN_LENGTH <= v <= MAX_LENGTH,
                      allowed=f"an integer in {MIN_LENGTH}..{MAX_LENGTH} (two digits to add, then noise)")
    lr: float = key(0.2, role=Role.run, ok=lambda v, c: is_number(v) and v > 0, allowed="a finite number > 0")
    seed: int = key(0, role=Role.run, ok=lambda v, c: _int(v) and 0 <= v <= MAX_SEED,
                    allowed=f"an integer in 0..{MAX_SEED}")
    reduction: Reduction = key(Reduction.sum, role=Role.run, ok=lambda v, c: v in list(Reduction),
                               allowed=_choices(Reduction))
    weight_decay: float = key(0.0, role=Role.run, ok=lambda v, c: is_number(v) and v >= 0,
                              allowed="a finite number >= 0")
    batch_size: int = key(64, role=Role.run, **AT_LEAST_1)
    model: ModelConfig = key(role=Role.run, factory=ModelConfig)
    optimizer: OptimizerConfig = key(role=Role.run, factory=OptimizerConfig)
    data: DataConfig = key(role=Role.operate, factory=DataConfig)
    grad_time: bool = key(True, role=Role.operate, **BOOL)  # dL/dh_t at every position, sigma_max(U)
    # k: grad_time.csv and the loggers' per-step scalars at every k-th step; grad_norms.csv: every step
    record_every: int = key(1, role=Role.operate, ok=lambda v, c: _int(v) and v >= 1,
                            allowed="an integer >= 1 (1: every step)")
    plot_steps: int = key(role=Role.resumable, **AT_LEAST_1)  # set by the clip preset (the book: 40, 100)
    resume: Optional[str] = key(None, role=Role.operate, names_job_dir=False)
    threads: Optional[int] = key(None, role=Role.operate, ok=lambda v, c: v is None or (_int(v) and v >= 1),
                                 allowed="an integer >= 1 (null: chosen for the launcher)", names_job_dir=False)
    sweep_add: bool = key(False, role=Role.operate, names_job_dir=False, **BOOL)  # add a multirun's jobs to a sweep dir's
    verbose: bool = key(False, role=Role.resumable, names_job_dir=False, **BOOL)


ConfigStore.instance().store(name="schema", node=Config)


class Key(NamedTuple):
    path: str  # dotted, as typed on the command line
    name: str  # in the run's record
    type: Any
    role: Role
    ok: Callable[[Any, Any], bool] | None
    allowed: str
    names_job_dir: bool


def _keys(cls, prefix: str = "") -> list[Key]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += _keys(kind, f"{prefix}{f.name}.")
        else:
            meta = f.metadata
            out.append(Key(prefix + f.name, meta["name"] or f.name, kind, meta["role"], meta["ok"],
                           meta["allowed"], meta["names_job_dir"]))
    return out


KEYS = _keys(Config)  # every leaf key, in the schema's order
RUN_KEYS = {k.name: k.path for k in KEYS if k.role == Role.run}  # name in the record -> path
# what a resume may change: the resumable keys, and how long the Trainer goes on and shows it
RESUMABLE = {*(k.path for k in KEYS if k.role == Role.resumable), "trainer.max_epochs",
             "trainer.enable_progress_bar"}
# what a sweep job's dir name leaves out (hydra.job.config.override_dirname.exclude_keys): the keys
# declared so, whether the progress bar shows, and the search's config group
NOT_IN_JOB_DIR_NAME = [*(k.path for k in KEYS if not k.names_job_dir), "trainer.enable_progress_bar",
                       "hparams_search"]
OmegaConf.register_new_resolver("not_in_job_dir_name", lambda: list(NOT_IN_JOB_DIR_NAME), replace=True)


def record_type(name: str) -> type:
    """The plain type a run key's value has in the record: int, float or str (None aside)."""
    kind = next(k.type for k in KEYS if k.name == name)
    kind = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # Optional[X] -> X
    return str if isinstance(kind, type) and issubclass(kind, str) else kind


class Rule(NamedTuple):
    key: str  # dotted, as typed on the command line
    ok: Callable[[Any, Any], bool]  # (value, whole config) -> allowed?
    allowed: str  # what the one-line error says the key must be


RULES = [
    *(Rule(k.path, k.ok, k.allowed) for k in KEYS if k.ok is not None),
    # Trainer arguments, which have no field of their own: those the run's record depends on
    Rule("trainer.max_epochs", lambda v, c: "max_epochs" not in c.trainer or (_int(v) and v >= 1),
         "an integer >= 1"),
    # The grad-norm record is per process: more than one device or node would need a record that
    # gathers them, which the project does not have.
    Rule("trainer.devices", lambda v, c: v == 1 or v == "1" or (
        _is_list(v) and len(v) == 1 and c.trainer.get("accelerator") in ("gpu", "cuda")),
         "1, or a list of one GPU with trainer.accelerator=gpu: the grad-norm record is per process"),
    Rule("trainer.check_val_every_n_epoch",
         lambda v, c: "check_val_every_n_epoch" not in c.trainer or (_int(v) and v >= 1), "an integer >= 1"),
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
    "plugins": "the run's checkpoint IO (a resumed checkpoint is read once) and cluster environment "
               "(one requeue mechanism: srn_lightning/cluster.py) are the project's",
    "barebones": "it turns off the logger and checkpoints the run's record is made of",
    "fast_dev_run": "it writes no checkpoints and no TensorBoard events; for a quick try, "
                    "trainer.max_epochs=1 (and +trainer.limit_train_batches=1)",
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
    """Value checks the types cannot express. Raises ConfigError for the first bad key. Looks only:
    the dirs are preflight's."""
    for rule in RULES:
        value = _get(cfg, rule.key)
        if not rule.ok(value, cfg):
            raise ConfigError(rule.key, value)
    for key, why in RESERVED_TRAINER_KEYS.items():
        if key in cfg.trainer and not (key == "accumulate_grad_batches" and cfg.trainer[key] == 1):
            raise ConfigError(f"trainer.{key}", cfg.trainer[key], f"left out: {why}")


def trainer_arguments() -> set[str]:
    """The arguments of `lightning.pytorch.Trainer`: the keys `trainer` may hold (imports Lightning)."""
    import inspect

    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def config_keys() -> list[str]:
    """Every key of the schema, dotted (`clip.mode`), parents (`clip`) before their children."""
    paths = [".".join(k.path.split(".")[: i + 1]) for k in KEYS for i in range(k.path.count(".") + 1)]
    return list(dict.fromkeys(paths))
