"""`resume=RUN_DIR` or `resume=CHECKPOINT`: continue an interrupted run in its own dir, with its own
config. Nothing read from the run dir is trusted: its overrides are replayed only where they are
keys of the project's own config, its files must be its own (no symbolic links), and the checkpoint
must be one of this run (its shapes and config). Everything is checked before anything is touched.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path
from typing import Any, NamedTuple

from srn_lightning import record
from srn_lightning.config import CONFIG_DIR, RESUMABLE, config_keys, trainer_arguments
from srn_lightning.errors import UserError, first_line

MULTIRUN_NAME = "multirun.yaml"  # a sweep dir's: the sweep's config, as Hydra saved it
# Set for the processes of a sweep that continues one (resume=SWEEP_DIR): its dir holds its jobs,
# numbered from this
CONTINUE_ENV = "SRN_SWEEP_CONTINUES"
# The settings of a sweep's launcher that a continuation takes over from multirun.yaml
LAUNCHER_OVERRIDES = ("hydra/launcher=", "hydra.launcher.")
SWEEPER_OVERRIDES = ("hydra/sweeper=", "hydra.sweeper.")  # and its sweeper's (a search's trials)
# What a sweep added to another (sweep_add=true) numbers its jobs from: set where the sweep starts,
# inherited by the processes that run its jobs (joblib workers, submitit jobs), and saved in its
# multirun.yaml as its jobs' environment (hydra.job.env_set)
JOB_OFFSET_ENV = "SRN_SWEEP_FIRST_JOB"
MONITOR_STATE = "GradNormMonitor"  # the callbacks' state keys in a checkpoint
RUN_CONFIG_STATE = "RunConfig"


class ResumeError(UserError, ValueError):
    """`resume=` names no run dir or checkpoint that can be resumed; str() is the one line to show."""


def resolve_resume(target) -> tuple[Path, Path | None]:
    """`resume=RUN_DIR` (its checkpoints/last.ckpt) or `resume=CHECKPOINT` -> (run dir, checkpoint),
    checked before anything is touched: the checkpoint must load with weights_only=True and hold
    the grad-norm rows. A run dir without a checkpoint (stopped before its first epoch ended) gives
    None: the run starts over in its own dir."""
    path = Path(target).expanduser().absolute()
    if path.is_dir():
        run_dir, ckpt = path, path / "checkpoints" / "last.ckpt"
    elif path.is_file():
        ckpt = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    else:
        raise ResumeError(f"resume={target}: no such run dir or checkpoint")
    if "${" in str(run_dir):  # Hydra resolves the dir's path in its own config: it must not be one
        raise ResumeError(f"resume={target}: {run_dir} holds '${{', which Hydra would read as an "
                          "interpolation; rename the dir")
    if not (run_dir / ".hydra" / "overrides.yaml").is_file():
        raise ResumeError(f"resume={target}: {run_dir} is not a run dir (no .hydra/overrides.yaml) "
                          f"nor a sweep dir (no {MULTIRUN_NAME})")
    check_no_links(target, run_dir)
    if not ckpt.is_file():
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("*.ckpt")):
            raise ResumeError(f"resume={target}: no checkpoint at {ckpt}; name one of "
                              f"{run_dir / 'checkpoints'} instead")
        return run_dir, None
    load_checkpoint(ckpt, target)
    return run_dir, ckpt


def check_no_links(target, run_dir: Path) -> None:
    """A run dir whose files are its own: a symbolic link anywhere in it could make the resumed run
    read or write a file elsewhere (its CSV, log, config or checkpoints)."""
    for root, dirs, files in os.walk(run_dir):  # does not follow links to dirs
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                link = Path(root, name)
                raise ResumeError(f"resume={target}: {link} is a symbolic link; a run dir that is "
                                  "resumed must hold its own files")


def load_checkpoint(ckpt: Path, target) -> dict:
    """The checkpoint's contents, loaded with weights_only=True; ResumeError if it is not one this
    project wrote (a corrupt or unsafe file, or one without the grad-norm rows). Loaded once per
    process: the checks that read it share what was read (as long as the file is unchanged)."""
    import torch

    key = _file_key(ckpt)
    if key in _loaded:
        return _loaded[key]
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # torch names the global it refuses to load: else not a pickle
            raise ResumeError(f"resume={target}: {ckpt} is not a readable checkpoint (not a pickle "
                              "torch writes)") from None
        raise ResumeError(f"resume={target}: {ckpt} holds objects other than tensors and plain data, "
                          "unsafe to load (it could run code); refused") from None
    except Exception as err:
        raise ResumeError(f"resume={target}: {ckpt} is not a readable checkpoint "
                          f"({type(err).__name__}: {first_line(err, 100)})") from None
    if not (isinstance(state, dict) and isinstance(state.get("state_dict"), dict) and "loops" in state):
        raise ResumeError(f"resume={target}: {ckpt} is not a checkpoint of a Lightning fit")
    if "rows" not in state.get("callbacks", {}).get(MONITOR_STATE, {}):
        raise ResumeError(f"resume={target}: {ckpt} holds no grad-norm rows (written by an older "
                          "version?); start the run afresh in a new dir")
    _loaded.clear()  # one checkpoint is resumed per process: keep only the latest
    _loaded[key] = state
    return state


_loaded: dict[tuple, dict] = {}


def _file_key(path) -> tuple:
    """A file as it is now: where it is, when it was last written, its size."""
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_mtime_ns, stat.st_size


def take_checked(path) -> dict | None:
    """The contents of checkpoint `path` as the checks read them, handed over once: to the fit that
    resumes from it, so the file is read once per process. None where the checks did not read it,
    or it has changed since."""
    try:
        return _loaded.pop(_file_key(path), None)
    except OSError:
        return None


def resume_checkpoint(resume) -> str | None:
    """The checkpoint a run resumes from: `resume` when it names one; None for a fresh run, or for
    a run dir that has none yet (a run stopped before its first epoch ended starts over in it)."""
    return resume if resume is not None and Path(resume).is_file() else None


def run_config(cfg) -> dict:
    """What a checkpoint must have been trained with to be resumed by this run: the keys the run is
    known by."""
    return record.config_summary(cfg)


def check_resume(cfg, run_dir) -> None:
    """A resumed run's checkpoint is one of this run in `run_dir` (check_checkpoint); nothing to
    check for a fresh run, or for a run dir that starts over."""
    from srn_lightning.module import module_from_config

    ckpt = resume_checkpoint(cfg.resume)
    if ckpt is not None:
        check_checkpoint(ckpt, module_from_config(cfg), run_config(cfg), run_dir, cfg)


def check_checkpoint(ckpt, module, run_config: dict, run_dir, cfg) -> None:
    """The checkpoint is one of this run: its weights have the module's names and shapes, the
    config it was trained with (cell, sizes, length, and everything else the run is known by, as
    the `RunConfig` callback saved it) is `run_config`, the checkpoints it names are in `run_dir`'s
    checkpoints/ (the best one is tested at the end), and the state it restores (rows, optimizer,
    shuffling, epoch) is one this run's training could have reached (`check_state`)."""
    state = load_checkpoint(Path(ckpt), ckpt)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved_shapes = {k: tuple(getattr(v, "shape", ())) for k, v in state["state_dict"].items()}
    if saved_shapes != shapes:
        bad = sorted(k for k in shapes.keys() | saved_shapes.keys() if shapes.get(k) != saved_shapes.get(k))
        raise ResumeError(f"resume={ckpt}: the checkpoint's weights do not fit this run's model "
                          f"({bad[0]}: {saved_shapes.get(bad[0])} in the checkpoint, "
                          f"{shapes.get(bad[0])} here); resume only with the run's own checkpoint")
    saved = state.get("callbacks", {}).get(RUN_CONFIG_STATE)
    if saved is None:
        raise ResumeError(f"resume={ckpt}: the checkpoint does not say what config it was trained "
                          "with (written by an older version?); start the run afresh in a new dir")
    for key, value in run_config.items():
        if saved.get(key) != value:
            raise ResumeError(f"resume={ckpt}: the checkpoint was trained with {key}="
                              f"{saved.get(key)}, this run has {key}={value}; resume only with the "
                              "run's own checkpoint")
    check_checkpoint_paths(ckpt, state, Path(run_dir))
    check_state(ckpt, state, module, cfg)


def check_state(ckpt, state: dict, module, cfg) -> None:
    """Everything a fit restores from the checkpoint besides the weights is checked against the run
    it continues: the monitors' rows (their width, a row for every step before the checkpoint that
    the monitor takes (every step, or every `record_every`-th), each
    finite: a run stops at its first non-finite norm, before an epoch's checkpoint), the optimizer's
    hyperparameters and state (as this run's config builds them), the shuffling generator's state,
    and the epoch (an epoch's end, within trainer.max_epochs). The run's settings must make the
    resume exact: validation at every epoch's end only."""
    import torch

    from srn_lightning.callbacks import GradFlowMonitor, GradNormMonitor
    from srn_lightning.data import batches

    def refuse(what: str) -> ResumeError:
        return ResumeError(f"resume={ckpt}: {what}; resume only with the run's own checkpoint")

    trainer = cfg.trainer
    if trainer.get("check_val_every_n_epoch", 1) != 1 or trainer.get("val_check_interval", 1.0) not in (1, 1.0):
        raise ResumeError("resume: a run that validates other than once at every epoch's end "
                          "(trainer.check_val_every_n_epoch, +trainer.val_check_interval) cannot be "
                          "resumed exactly: its dev accuracy and best checkpoint would differ from the "
                          "uninterrupted run's; start it afresh")
    epoch, step = state.get("epoch"), state.get("global_step")
    per_epoch = batches("train", cfg.batch_size, cfg.length, trainer.get("limit_train_batches", 1.0))
    if not (isinstance(epoch, int) and isinstance(step, int) and epoch >= 0
            and epoch * per_epoch < step <= (epoch + 1) * per_epoch):
        raise refuse(f"its epoch {epoch} and step {step} are no epoch's end at {per_epoch} steps an epoch")
    if trainer.get("max_epochs", -1) not in (-1, None) and trainer.max_epochs < epoch + 1:
        raise ResumeError(f"trainer.max_epochs={trainer.max_epochs}: the run has trained {epoch + 1} "
                          f"epochs; resume with trainer.max_epochs >= {epoch + 1}")
    monitors = [GradNormMonitor(module.tracked_parameters())]
    if cfg.grad_time:
        monitors.append(GradFlowMonitor(module.model.rnn_model, cfg.length, cfg.record_every))
    for monitor in monitors:
        name = type(monitor).__name__
        saved = state.get("callbacks", {}).get(name)
        rows = saved.get("rows") if isinstance(saved, dict) else None
        if not (isinstance(rows, torch.Tensor) and rows.dtype == torch.float32 and rows.dim() == 2
                and rows.shape[1] == len(monitor.columns) and saved.get("columns") == monitor.columns):
            raise refuse(f"its {name} rows are not this run's {len(monitor.columns)} columns")
        steps = rows[:, 0]
        every = getattr(monitor, "every", 1)  # a monitor that samples takes every k-th step
        gap = float(steps[1] - steps[0]) if len(steps) > 1 else float(every)
        taken_every = int(gap) if math.isfinite(gap) and gap == int(gap) else every  # crafted steps: no hint
        if (taken_every != every and taken_every > 0
                and torch.equal(steps, torch.arange(0, step, taken_every, dtype=torch.float32))):
            raise ResumeError(f"resume={ckpt}: its {name} rows were taken every {taken_every} steps; "
                              f"resume with record_every={taken_every}")
        if not torch.equal(steps, torch.arange(0, step, every, dtype=torch.float32)):
            taken = f"of the {step} steps before it" + ("" if every == 1 else f" whose number is a multiple of {every}")
            raise refuse(f"its {name} rows are not one for each {taken}")
        epochs = rows[:, 1]
        if not torch.equal(epochs, (steps // per_epoch).clamp(max=epoch)):
            raise refuse(f"its {name} rows' epochs do not follow {per_epoch} steps an epoch")
        if not bool(torch.isfinite(rows).all()):
            raise refuse(f"its {name} rows hold a non-finite value (a run stops at its first one)")
    check_optimizer_state(ckpt, state, module, refuse)
    generator = (state.get("DigitSumDataModule") or {}).get("shuffle_generator")
    try:
        torch.Generator().set_state(generator)
    except Exception:  # TypeError, RuntimeError: not a generator state
        raise refuse("its shuffling generator state is not one") from None


def check_optimizer_state(ckpt, state: dict, module, refuse) -> None:
    """The optimizer state is one of the optimizer this run builds: the same hyperparameters (lr,
    weight decay, momentum, betas: a changed one would train the rest of the run otherwise than its
    record says), the same parameters, and per-parameter state of their shapes."""
    import torch

    fresh = module.configure_optimizers().state_dict()
    saved = state.get("optimizer_states")
    if not (isinstance(saved, list) and len(saved) == 1 and isinstance(saved[0], dict)):
        raise refuse("it does not hold one optimizer's state")
    groups, opt_state = saved[0].get("param_groups"), saved[0].get("state")
    if not (isinstance(groups, list) and len(groups) == len(fresh["param_groups"]) and isinstance(opt_state, dict)):
        raise refuse("its optimizer state is not this run's optimizer's")
    for group, expected in zip(groups, fresh["param_groups"]):
        if not isinstance(group, dict) or set(group) != set(expected):
            raise refuse("its optimizer state is not this run's optimizer's")
        for key, value in expected.items():
            if group[key] != value:
                raise refuse(f"its optimizer's {key} is {group[key]}, this run's {value}")
    shapes = {i: p.shape for i, p in enumerate(module.parameters())}
    for index, per_param in opt_state.items():
        if index not in shapes or not isinstance(per_param, dict):
            raise refuse("its optimizer state names parameters this run does not have")
        for key, value in per_param.items():
            if not isinstance(value, torch.Tensor) or not bool(torch.isfinite(value).all()) or (
                    value.dim() > 0 and value.shape != shapes[index]):
                raise refuse(f"its optimizer's {key} of parameter {index} does not fit it")


def check_checkpoint_paths(ckpt, state: dict, run_dir: Path) -> None:
    """The ModelCheckpoint states in `state` name files of `run_dir`'s checkpoints/ only: a run
    dir that was moved or copied, or a crafted state, would have the run test (read) a file
    elsewhere."""
    home = os.path.realpath(run_dir / "checkpoints")
    for key, cb in state.get("callbacks", {}).items():
        if not isinstance(cb, dict) or "dirpath" not in cb:
            continue
        paths = [cb.get("dirpath"), cb.get("best_model_path"), cb.get("kth_best_model_path"),
                 cb.get("last_model_path"), *(cb.get("best_k_models") or {})]
        for path in filter(None, paths):
            if os.path.realpath(os.path.dirname(path) if path != cb.get("dirpath") else path) != home:
                raise ResumeError(f"resume={ckpt}: the checkpoint's {key.split('{')[0]} names {path}, "
                                  f"outside {home} (a run dir moved or copied?); resume a run in the "
                                  "dir it ran in, or start afresh")


def replayable(override: str, run_dir: Path) -> str:
    """An override of the run's saved overrides.yaml, if it is one a user can type for this
    project's config: a key of the config (or `+trainer.<Trainer argument>`), set to one value.
    Anything else (hydra.*, +/~ keys, packages, sweeps) is refused: the file could have been
    written by anyone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    where = f"{run_dir / '.hydra' / 'overrides.yaml'}: {override!r:.80}"
    if not isinstance(override, str):
        raise ResumeError(f"{where} is not an override")
    if "${" in override:  # replayed as typed: never resolved from the environment or another key
        raise ResumeError(f"{where}: holds an interpolation ('${{'); a run's overrides are replayed as "
                          "plain values only")
    try:
        parsed = OverridesParser.create().parse_override(str(override))
    except Exception:
        raise ResumeError(f"{where} is not an override") from None
    key = parsed.key_or_group
    add_trainer_arg = (parsed.type == OverrideType.ADD and key.startswith("trainer.")
                       and key.removeprefix("trainer.") in trainer_arguments())
    if (parsed.package is not None or parsed.is_sweep_override()
            or not (parsed.type == OverrideType.CHANGE and key in schema_keys() or add_trainer_arg)):
        raise ResumeError(f"{where}: not replayed on resume; a run's overrides may only set keys of "
                          "the project's config (as in the README's table), one value each")
    return str(override)


def schema_keys() -> set[str]:
    """The keys of the project's config a user can set: every key of the composed config (less
    hydra's), and the config groups."""
    return {*config_keys(), *_default_trainer_keys(), *config_groups()}


def config_groups() -> set[str]:
    """Config groups of the project that a run's overrides may choose from: conf/'s folders, less
    Hydra's (read when asked, not at import)."""
    return {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()} - {"hydra"}


def _default_trainer_keys() -> list[str]:
    import yaml

    return [f"trainer.{k}" for k in yaml.safe_load((Path(CONFIG_DIR) / "trainer" / "default.yaml").read_text())]


def quote(value) -> str:
    """`value` as a quoted value of Hydra's override grammar, read back exactly: quotes and the
    backslashes before them escaped, and `${` so that OmegaConf takes it literally."""
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value))
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def resume_argv(argv: list[str]) -> list[str]:
    """Rewrite `resume=X [overrides]` into the run's own overrides + the given ones, in its own dir;
    `resume=SWEEP_DIR` into the sweep's own (`continue_sweep_argv`)."""
    targets = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not targets or targets[-1] == "null":
        return argv
    if not targets[-1]:
        raise ResumeError("resume=: empty; give a run dir or a checkpoint (resume=outputs/runs/...)")
    if (Path(targets[-1]) / MULTIRUN_NAME).is_file():
        return continue_sweep_argv(Path(targets[-1]), [a for a in argv if not a.startswith("resume=")])
    run_dir, ckpt = resolve_resume(targets[-1])
    saved = read_overrides(run_dir)
    saved = [replayable(o, run_dir) for o in saved if not str(o).startswith("resume=")]
    given = [a for a in argv if not a.startswith("resume=")]
    for override in (a for a in given if not a.startswith("-")):  # flags such as -m pass through
        key = override.lstrip("+~").split("=", 1)[0]
        if key not in RESUMABLE and not key.startswith("hydra."):
            raise ResumeError(
                f"{key}: cannot change on resume (the checkpoint was trained with the run's own "
                f"config); allowed with resume=: {', '.join(sorted(RESUMABLE))}"
            )
    # a run dir without a checkpoint: resume= names the dir, and the run starts over in it. A run
    # dir is resumed as the one run it is, even where its overrides chose a preset that sweeps
    # (experiment=weight_decay): the job's own value of the swept key is among its overrides.
    return [*saved, *given, f"resume={quote(ckpt or run_dir)}", f"hydra.run.dir={quote(run_dir)}",
            "hydra.mode=RUN"]


def read_overrides(run_dir: Path) -> list:
    """The run's saved overrides (record.read_overrides: bounded, plain), or ResumeError."""
    from srn_lightning import record

    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        return record.read_overrides(run_dir)
    except (OSError, ValueError) as err:
        raise ResumeError(f"{path}: {err}") from None


class SweepPart(NamedTuple):
    """One sweep run into a sweep dir: the first, or one added to it with sweep_add=true. Its jobs
    are numbered from `first`; `config` is its newest multirun.yaml (`where`): a continuation saves
    the config of the part it continues again."""

    first: int
    config: Any
    where: Path

    @property
    def task(self) -> list[str]:
        return [str(o) for o in self.config.hydra.overrides.task]

    @property
    def search(self) -> bool:
        """Whether its jobs are the trials of a search (its sweeper asks them as it goes)."""
        return "optuna" in str(self.config.hydra.sweeper.get("_target_", "")).lower()

    @property
    def basic(self) -> bool:
        """Whether Hydra's basic sweeper made its jobs (or the project's, which numbers them as it
        does, srn_lightning/stacking.py): one for each combination of its values."""
        return str(self.config.hydra.sweeper.get("_target_", "")).endswith((".BasicSweeper",
                                                                             ".SeedStackingSweeper"))


def sweep_parts(sweep_dir: Path) -> list[SweepPart]:
    """The sweeps run into `sweep_dir`, by their first job number, from its multirun.yaml and the
    copies kept of the earlier ones (multirun.<n>.yaml, oldest first): for each first job number,
    the newest config. ResumeError for a file that is not a sweep's config."""
    from omegaconf import OmegaConf

    def order(path: Path) -> int:
        middle = path.name.split(".")[1]
        return int(middle) if middle.isdigit() else -1

    kept = sorted((p for p in sweep_dir.glob("multirun.*.yaml") if order(p) >= 0), key=order)
    parts: dict[int, SweepPart] = {}
    for where in [*kept, sweep_dir / MULTIRUN_NAME]:
        try:
            saved = OmegaConf.load(where)
            for key in ("task", "hydra"):
                if not OmegaConf.is_list(saved.hydra.overrides[key]):
                    raise ValueError(f"hydra.overrides.{key} is not a list")
            first = int(saved.hydra.job.get("env_set", {}).get(JOB_OFFSET_ENV, 0))
        except Exception as err:
            raise ResumeError(f"resume={sweep_dir}: {where} is not a sweep's config "
                              f"({str(err).splitlines()[0][:80]})") from None
        parts[first] = SweepPart(first, saved, where)
    return [parts[k] for k in sorted(parts)]


def continue_sweep_argv(sweep_dir: Path, given: list[str]) -> list[str]:
    """`resume=SWEEP_DIR [launcher settings]`: the sweep again, with its own overrides, launcher and
    sweeper, into its own dir, each job into its own job dir (attempts.plan decides there what is
    kept, resumed or run). Only `hydra.*` settings may be given (another launcher, its resources):
    the jobs are the sweep's; and what a resumed run may change (RESUMABLE, threads). Everything is
    checked first (`check_jobs`: the dir's configs against its jobs' records). A dir that holds
    sweeps added to the first (sweep_add=true) continues each in turn, in a process of its own
    (`continue_parts`), and ends here."""
    check_sweep_links(sweep_dir)
    parts = sweep_parts(sweep_dir)
    # what a resumed run may change, less what names a job's dir (trainer.max_epochs): a job
    # continued under another name would be a second dir of its number
    unnamed = parts[-1].config.hydra.job.config.override_dirname.get("exclude_keys") or []
    allowed = (set(RESUMABLE) | {"threads"}) & {str(k) for k in unnamed}
    bad = [a for a in given if not a.startswith(("-", "hydra.", "hydra/"))
           and a.lstrip("+~").split("=", 1)[0] not in allowed]
    if bad:
        raise ResumeError(f"{bad[0].split('=')[0]}: cannot change when a sweep continues (its jobs "
                          "are the sweep's, their dirs named by their settings); allowed with "
                          f"resume=SWEEP_DIR: hydra.* (its launcher's settings), {', '.join(sorted(allowed))}")
    for part in parts:
        for override in part.task:  # the sweep's own, as replayable as a run's, but sweeps allowed
            if override.split("=", 1)[0].lstrip("+~") not in ("sweep_add",):
                replayable_sweep(override, part.where)
        if part.search:
            check_search(sweep_dir, part)
    check_jobs(sweep_dir, parts)
    argvs = [part_argv(sweep_dir, part, given) for part in parts]
    if len(parts) == 1:
        os.environ[CONTINUE_ENV] = str(parts[0].first)
        return argvs[0]
    raise SystemExit(continue_parts(parts, argvs))


def check_sweep_links(sweep_dir: Path) -> None:
    """The files of a continued sweep are its own: none of its dir's entries (its configs, its
    report) and nothing in its job dirs is a symbolic link. Its hidden dirs are its launcher's
    (submitit's .submitit/, which links its own files)."""
    from srn_lightning.report_jobs import find_jobs

    for entry in sweep_dir.iterdir():
        if entry.is_symlink():
            raise ResumeError(f"resume={sweep_dir}: {entry} is a symbolic link; a sweep that is "
                              "continued must hold its own files")
    for _, job_dir in find_jobs(sweep_dir):
        check_no_links(sweep_dir, job_dir)


def part_argv(sweep_dir: Path, part: SweepPart, given: list[str]) -> list[str]:
    """The command line that continues `part` of the sweep: its overrides, its launcher's and
    sweeper's settings, the given ones, into the sweep dir."""
    hydra = [str(o) for o in part.config.hydra.overrides.hydra]
    own = [o for o in hydra if o.startswith(LAUNCHER_OVERRIDES + SWEEPER_OVERRIDES)]
    return ["-m", *[o for o in part.task if not o.startswith("sweep_add=")], *own,
            *[a for a in given if a != "-m" and a != "--multirun"], f"hydra.sweep.dir={quote(sweep_dir)}"]


def continue_parts(parts: list[SweepPart], argvs: list[list[str]]) -> int:
    """Continues each part of a sweep dir, oldest first, in a process of its own (as its own
    command would: its launcher, its report at the end); returns the first non-zero exit status,
    else 0. A signal to this process goes to the part that runs, which stops with its records,
    and no further part starts."""
    import signal
    import subprocess
    import sys

    from srn_lightning.interrupts import Interrupted

    status = 0
    for part, argv in zip(parts, argvs):
        env = {**os.environ, CONTINUE_ENV: str(part.first)}
        child = subprocess.Popen([sys.executable, "-m", "srn_lightning.train", *argv], env=env)
        try:
            code = child.wait()
        except Interrupted as stop:  # sent to this process alone, or with the part (Ctrl-C)
            child.send_signal(signal.Signals[stop.signal])  # a second one to a run: "already stopping"
            child.wait()
            raise
        status = status or code
    return status


def check_search(sweep_dir: Path, part: SweepPart) -> None:
    """An Optuna search continues as a replay: the study starts again in memory with the same
    sampler seed, each trial that has a record gives Optuna its recorded value again (kept) or
    resumes from its last epoch, so that the sampler asks the same trials, numbered as before, and
    the trials never run follow. That needs the seed, and a study only in memory: a study kept in a
    storage would be loaded with its earlier trials, and the search would ask new ones, numbering
    their jobs from 0 again, and leave the interrupted trial unfinished in it."""
    sweeper = part.config.hydra.sweeper
    if sweeper.get("storage") is not None:
        raise ResumeError(f"resume={sweep_dir}: the search keeps its study in {sweeper.storage}: "
                          "Optuna would go on from there with new trials, numbered from job 0 again, "
                          "and leave the interrupted one unfinished; continue such a study into a new "
                          "sweep dir (hydra.sweep.dir=...), or start the search with storage null")
    if (sweeper.get("sampler") or {}).get("seed") is None:
        raise ResumeError(f"resume={sweep_dir}: the search has no sampler seed "
                          "(hydra.sweeper.sampler.seed): replayed, it would ask other trials than its "
                          "jobs ran; not continued")


# What the record of a job may say otherwise than its sweep's config without contradicting it:
# what a resumed or continued run may change, and how it was launched
NOT_SETTINGS = (*RESUMABLE, "threads", "resume", "sweep_add")


def check_jobs(sweep_dir: Path, parts: list[SweepPart]) -> None:
    """Every job dir of the sweep is a job one of its configs defines, with the overrides its
    record (.hydra/overrides.yaml) holds: a multirun.yaml changed by hand would otherwise run
    other jobs under numbers that have records. The jobs of Hydra's basic sweeper (one for each
    combination) and of a search's trials are known from the config; of another sweeper, only
    each job's own record is checked (`check_metrics_config`). Only reads."""
    from srn_lightning.report_jobs import UNNUMBERED, find_jobs

    expanded = {part.first: part_jobs(part) if part.basic else None for part in parts}
    for num, job_dir in find_jobs(sweep_dir):
        where = job_dir / ".hydra" / "overrides.yaml"
        part = next((p for p in reversed(parts) if p.first <= num), None)
        jobs = expanded[part.first] if part else None
        if num == UNNUMBERED:
            raise ResumeError(f"resume={sweep_dir}: {job_dir} is a job dir without a number (its name "
                              "does not start with one, nor does its .hydra/hydra.yaml hold one); "
                              "nothing continued")
        if part is not None and not (part.basic or part.search):
            check_metrics_config(sweep_dir, part, num, job_dir)
            continue
        if part is None or num - part.first >= job_count(part, jobs):
            raise ResumeError(f"resume={sweep_dir}: {where} is the record of job {num}, which no config "
                              f"of the sweep ({MULTIRUN_NAME} and the earlier multirun.<n>.yaml) has "
                              "(changed by hand?); nothing continued")
        recorded = settings(read_overrides(job_dir))
        if jobs is not None:
            expected = settings(jobs[num - part.first])
        else:  # a trial: the search's fixed overrides, and a value for each key it searches
            searched = set(part.config.hydra.sweeper.get("params") or {}) | {
                o.split("=", 1)[0] for o in part.task if is_sweep(o)}
            expected = settings(o for o in part.task if not is_sweep(o))
            recorded = {k: v for k, v in recorded.items() if k.split("=", 1)[0].lstrip("+~") not in searched}
        if recorded.keys() != expected.keys():
            ours = [v for k, v in expected.items() if k not in recorded]
            theirs = [v for k, v in recorded.items() if k not in expected]
            raise ResumeError(f"resume={sweep_dir}: {part.where} gives job {num} "
                              f"{' '.join(ours) or 'no such override'}, its record {where} says "
                              f"{' '.join(theirs) or 'nothing of it'} ({part.where.name} changed by "
                              "hand?); nothing continued")
        check_metrics_config(sweep_dir, part, num, job_dir)


def check_metrics_config(sweep_dir: Path, part: SweepPart, num: int, job_dir: Path) -> None:
    """A job's metrics.json, where it has one, holds the values its overrides set for the keys a run
    is known by (seed, lr, length, clip.val, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from srn_lightning.config import RUN_KEYS

    try:
        saved = record.read_metrics(job_dir)
    except (OSError, ValueError):  # none yet, or none to trust: the job runs again
        return
    names = {path: name for name, path in RUN_KEYS.items()}
    for text in read_overrides(job_dir):
        parsed = OverridesParser.create().parse_override(text)
        name = names.get(parsed.key_or_group)
        if name is None or name not in saved:
            continue
        value, kept = parsed.value(), saved[name]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, kept))
        if (float(value) != float(kept)) if numbers else (str(value) != str(kept)):
            raise ResumeError(f"resume={sweep_dir}: {part.where} gives job {num} {text}, its record "
                              f"{job_dir / record.METRICS_NAME} says {name}={kept} (changed by hand?); "
                              "nothing continued")


def job_count(part: SweepPart, jobs: list | None = None) -> int:
    """How many jobs `part` has: its combinations (`jobs`, else `part_jobs`), or a search's trials."""
    if part.search:
        return int(part.config.hydra.sweeper.get("n_trials") or 0)
    return len(jobs if jobs is not None else part_jobs(part))


def settings(overrides) -> dict[str, str]:
    """The overrides that make a job what it is (not what a continued run may change), each as
    key=value read by Hydra's grammar (a search writes `False` where its sweep said `false`) ->
    the override as written."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = {}
    for text in overrides:
        parsed = OverridesParser.create().parse_override(text)
        if parsed.key_or_group.lstrip("+~") not in NOT_SETTINGS:
            found[f"{parsed.get_key_element()}={parsed.value()!r}"] = text
    return found


def is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


def part_jobs(part: SweepPart) -> list[list[str]]:
    """The overrides of each job of a part, in job order, as Hydra's basic sweeper makes them: its
    sweeper's params, then its overrides, a key given twice taking its last value, every
    combination of the swept values."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (part.config.hydra.sweeper.get("params") or {}).items()]
    parser = OverridesParser.create()
    choices: dict[str, list[str]] = {}
    for parsed in parser.parse_overrides([*params, *part.task]):
        key = parsed.get_key_element()
        if parsed.is_sweep_override():
            choices[key] = [f"{key}={v}" for v in parsed.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={parsed.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def replayable_sweep(override: str, where: Path) -> str:
    """An override of a sweep's multirun.yaml: `replayable`, with sweeps (a,b,c) allowed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_override(override)
    except Exception:
        raise ResumeError(f"{where}: {override!r} is not an override") from None
    if parsed.is_sweep_override():
        key = parsed.key_or_group
        if key not in schema_keys() or parsed.package is not None:
            raise ResumeError(f"{where}: {override!r}: not replayed; a sweep's overrides may only set "
                              "keys of the project's config (as in the README's table)")
        return override
    return replayable(override, where.parent)
