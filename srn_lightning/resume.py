"""`resume=RUN_DIR` or `resume=CHECKPOINT`: continue an interrupted run in its own dir, with its own
config. Nothing read from the run dir is trusted: its overrides are replayed only where they are
keys of the project's own config, its files must be its own (no symbolic links), and the checkpoint
must be one of this run (its shapes and config). Everything is checked before anything is touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from srn_lightning import record
from srn_lightning.config import CONFIG_DIR, RESUMABLE, config_keys, trainer_arguments
from srn_lightning.errors import UserError

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
        raise ResumeError(f"resume={target}: {run_dir} is not a run dir (no .hydra/overrides.yaml)")
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
        state["state_dict"], state["loops"]
    except Exception as err:
        raise ResumeError(f"resume={target}: {ckpt} is not a readable checkpoint ({err!s:.80})") from None
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
        check_checkpoint(ckpt, module_from_config(cfg), run_config(cfg), run_dir)


def check_checkpoint(ckpt, module, run_config: dict, run_dir) -> None:
    """The checkpoint is one of this run: its weights have the module's names and shapes, the
    config it was trained with (cell, sizes, length, and everything else the run is known by, as
    the `RunConfig` callback saved it) is `run_config`, and the checkpoints it names are in
    `run_dir`'s checkpoints/ (the best one is tested at the end)."""
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

    where = f"{run_dir / '.hydra' / 'overrides.yaml'}: {override!r}"
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
    """Rewrite `resume=X [overrides]` into the run's own overrides + the given ones, in its own dir."""
    targets = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not targets or targets[-1] == "null":
        return argv
    if not targets[-1]:
        raise ResumeError("resume=: empty; give a run dir or a checkpoint (resume=outputs/runs/...)")
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
    # a run dir without a checkpoint: resume= names the dir, and the run starts over in it
    return [*saved, *given, f"resume={quote(ckpt or run_dir)}", f"hydra.run.dir={quote(run_dir)}"]


def read_overrides(run_dir: Path) -> list:
    """The run's saved overrides: a YAML list, or ResumeError."""
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        saved = yaml.safe_load(path.read_text()) or []
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ResumeError(f"{path}: not a YAML list of overrides ({str(err).splitlines()[0]})") from None
    if not isinstance(saved, list):
        raise ResumeError(f"{path}: not a YAML list of overrides")
    return saved
