"""`resume=RUN_DIR` or `resume=CHECKPOINT`: continue an interrupted run in its own dir, with its own
config. Everything is checked before anything is touched."""

from __future__ import annotations

from pathlib import Path

from srn_lightning.errors import UserError


# What a resumed run may change: how long it goes on, and where it reads data and how it shows
# progress. Anything else would make the rest of the run a different experiment from its start.
RESUMABLE_OVERRIDES = {"trainer.max_epochs", "trainer.enable_progress_bar", "data.dir",
                       "data.num_workers", "plot_steps", "verbose"}


class ResumeError(UserError, ValueError):
    """`resume=` names no run dir or checkpoint that can be resumed; str() is the one line to show."""


def resolve_resume(target) -> tuple[Path, Path]:
    """`resume=RUN_DIR` (its checkpoints/last.ckpt) or `resume=CHECKPOINT` -> (run dir, checkpoint),
    checked before anything is touched: the checkpoint must load with weights_only=True."""
    import torch

    path = Path(target).expanduser().absolute()
    if path.is_dir():
        run_dir, ckpt = path, path / "checkpoints" / "last.ckpt"
    elif path.is_file():
        ckpt = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    else:
        raise ResumeError(f"resume={target}: no such run dir or checkpoint")
    if not (run_dir / ".hydra" / "overrides.yaml").is_file():
        raise ResumeError(f"resume={target}: {run_dir} is not a run dir (no .hydra/overrides.yaml)")
    if not ckpt.is_file():
        raise ResumeError(
            f"resume={target}: no checkpoint at {ckpt} (the run ended before its first epoch did); "
            "start it afresh"
        )
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state["state_dict"], state["loops"]
    except Exception as err:
        raise ResumeError(f"resume={target}: {ckpt} is not a readable checkpoint ({err!s:.80})") from None
    return run_dir, ckpt


def resume_argv(argv: list[str]) -> list[str]:
    """Rewrite `resume=X [overrides]` into the run's own overrides + the given ones, in its own dir."""
    import yaml

    targets = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not targets or not targets[-1] or targets[-1] == "null":
        return argv
    run_dir, ckpt = resolve_resume(targets[-1])
    saved = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    saved = [o for o in saved if not o.startswith("resume=")]
    given = [a for a in argv if not a.startswith("resume=")]
    for override in (a for a in given if not a.startswith("-")):  # flags such as -m pass through
        key = override.lstrip("+~").split("=", 1)[0]
        if key not in RESUMABLE_OVERRIDES and not key.startswith("hydra."):
            raise ResumeError(
                f"{key}: cannot change on resume (the checkpoint was trained with the run's own "
                f"config); allowed with resume=: {', '.join(sorted(RESUMABLE_OVERRIDES))}"
            )
    return [*saved, *given, f"resume='{ckpt}'", f"hydra.run.dir='{run_dir}'"]
