"""The config's schema and value checks: a bad value stops the run before any work, with one line
that names the key and what is allowed."""

from __future__ import annotations

import difflib
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback

from srn_lightning.errors import UserError

CLIP_MODES = ("none", "norm", "value", "norm_each")
REDUCTIONS = ("sum", "mean")
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


@dataclass
class ClipConfig:
    mode: str = "none"
    val: Optional[float] = None
    plot_steps: int = 40


@dataclass
class ModelConfig:
    input_size: int = 32
    hidden_size: int = 32


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
    reduction: str = "sum"
    weight_decay: float = 0.0
    batch_size: int = 64
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    plot_steps: int = 40
    resume: Optional[str] = None
    threads: Optional[int] = None


ConfigStore.instance().store(name="schema", node=Config)

# What each checked key allows, worded for the one-line error.
ALLOWED = {
    "length": "an integer >= 3 (two digits to add, then noise)",
    "lr": "a finite number > 0",
    "seed": f"an integer in 0..{MAX_SEED}",
    "reduction": " or ".join(REDUCTIONS),
    "weight_decay": "a finite number >= 0",
    "batch_size": "an integer >= 1",
    "model.input_size": "an integer >= 1",
    "model.hidden_size": "an integer >= 1",
    "clip": ", ".join(CLIP_MODES),
    "clip.mode": ", ".join(CLIP_MODES),
    "clip.val": "a finite number > 0 (null with clip=none)",
    "plot_steps": "an integer >= 1",
    "clip.plot_steps": "an integer >= 1",
    "data.num_workers": "an integer >= 0",
    "trainer.max_epochs": "an integer >= 1",
    "threads": "an integer >= 1 (null: chosen for the launcher)",
}


class ConfigError(UserError, ValueError):
    """A config value that is not allowed; str() is the one line to show."""

    def __init__(self, key: str, value: Any, allowed: str | None = None) -> None:
        super().__init__(f"{key}={value}: not allowed; {key} must be {allowed or ALLOWED[key]}")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate(cfg) -> None:
    """Value checks the types cannot express. Raises ConfigError for the first bad key."""
    if cfg.clip.mode == "none" and cfg.clip.val is not None:
        raise ConfigError("clip.val", cfg.clip.val, "null with clip=none (pick clip=norm, value or norm_each)")
    max_epochs = cfg.trainer.get("max_epochs", 1)
    checks = {
        "length": cfg.length >= 3,
        "lr": _finite(cfg.lr) and cfg.lr > 0,
        "seed": 0 <= cfg.seed <= MAX_SEED,
        "reduction": cfg.reduction in REDUCTIONS,
        "weight_decay": _finite(cfg.weight_decay) and cfg.weight_decay >= 0,
        "batch_size": cfg.batch_size >= 1,
        "model.input_size": cfg.model.input_size >= 1,
        "model.hidden_size": cfg.model.hidden_size >= 1,
        "clip.mode": cfg.clip.mode in CLIP_MODES,
        "clip.val": cfg.clip.mode == "none" or (_finite(cfg.clip.val) and cfg.clip.val > 0),
        "clip.plot_steps": cfg.clip.plot_steps >= 1,
        "plot_steps": cfg.plot_steps >= 1,
        "data.num_workers": cfg.data.num_workers >= 0,
        "trainer.max_epochs": _int(max_epochs) and max_epochs >= 1,
        "threads": cfg.threads is None or cfg.threads >= 1,
    }
    for key, ok in checks.items():
        if not ok:
            value = cfg
            for part in key.split("."):
                value = value[part]
            raise ConfigError(key, value)
    for key, why in RESERVED_TRAINER_KEYS.items():
        if key in cfg.trainer and not (key == "accumulate_grad_batches" and cfg.trainer[key] == 1):
            raise ConfigError(f"trainer.{key}", cfg.trainer[key], f"left out: {why}")
    files = [Path(cfg.data.dir) / str(cfg.length) / f"{s}.txt" for s in ("train", "dev", "test")]
    if cfg.data.regenerate or not all(f.exists() for f in files):
        check_writable_dir(cfg.data.dir, "data.dir")


def check_trainer_keys(trainer_cfg) -> None:
    """Keys added with `+trainer.x=...` must be Trainer arguments (imports Lightning)."""
    known = _trainer_arguments()
    for key in trainer_cfg:
        if key not in known:
            raise ConfigError(f"trainer.{key}", trainer_cfg[key], f"a Trainer argument{_did_you_mean(key, known)}")


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


class CheckConfig(Callback):
    """Hydra callback: checks a run's config, and the output dir of a run or sweep, before Hydra
    creates that dir. Hydra turns an exception in a callback into a warning and goes on, so a bad
    config exits here, with its one line."""

    def on_run_start(self, config, **kwargs) -> None:
        try:
            validate(config)
            check_fresh_run_dir(config.hydra.run.dir, config.resume)
            check_writable_dir(config.hydra.run.dir, "hydra.run.dir")
            check_trainer_keys(config.trainer)  # last: it imports Lightning
        except ConfigError as err:
            raise SystemExit(f"error: {err}") from None
        except Exception as err:  # a check that broke must still stop the run, not be a warning
            raise SystemExit(f"error: config check failed: {type(err).__name__}: {err}") from None

    def on_multirun_start(self, config, **kwargs) -> None:
        # each job's values are checked in the job: a bad one fails that job, not the sweep
        try:
            check_writable_dir(config.hydra.sweep.dir, "hydra.sweep.dir")
        except ConfigError as err:
            raise SystemExit(f"error: {err}") from None


def explain(err: BaseException) -> str | None:
    """One line for an error a user can fix from the command line; None for anything else."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(err, MissingConfigException) and err.options is not None:
        group, _, name = (err.missing_cfg_file or "").rpartition("/")
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
