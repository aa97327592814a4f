"""The config's schema and its rules: the dataclasses give every key its type, RULES says what each
checked key allows. A bad value stops the run before any work, with one line that names the key and
what is allowed, and that line comes from the same rule as the check.

A new key is: a field here (and a rule if its type does not say all), a line in conf/, a row in the
README's config table.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from srn_lightning.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")  # the YAML, shipped in the package: conf/config.yaml and its groups
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
        super().__init__(f"{key}={value}: not allowed; {key} must be {allowed or ALLOWED[key]}")


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


def config_keys(node=None, prefix: str = "") -> list[str]:
    """Every key of the schema, dotted (`clip.mode`), parents before their children."""
    from omegaconf import DictConfig

    node = OmegaConf.structured(Config) if node is None else node
    keys = []
    for k in node:
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(node[k], DictConfig):
            keys.extend(config_keys(node[k], full + "."))
    return keys
