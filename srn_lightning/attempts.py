"""A sweep job that runs again in its own dir (requeued by Slurm or submitit, or relaunched by
`resume=SWEEP_DIR`) takes up its earlier attempt instead of starting over beside it:

- completed (or diverged: a result too): kept as it is, not run again;
- interrupted or killed with a `checkpoints/last.ckpt`: resumed from it, its last completed epoch,
  with the checkpoints the first attempt wrote after that epoch removed (the resumed run's
  ModelCheckpoints know only those the checkpoint names) and TensorBoard's later steps purged
  (`purge_step`), so the run dir reads as one run;
- anything else (failed, or stopped before its first epoch ended): the earlier attempt's files are
  removed and the job runs afresh; a job cancelled before it started (its record, the launcher's,
  names no signal) too, as its first attempt.

The record of the run says how many earlier attempts it continued (`requeues`) and which signal
stopped each (`requeue_signals`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from srn_lightning import record

log = logging.getLogger(__name__)

KEPT = record.KEPT
# what a run writes into its dir besides .hydra/, train.log and .lock: an attempt that starts over
# removes them
RUN_FILES = (record.METRICS_NAME, record.CSV_NAME, record.GRAD_TIME_CSV,
             *(f"{stem}.{ext}" for stem in (record.FIGURE_STEM, record.GRAD_TIME_STEM)
               for ext in ("png", "pdf")))
RUN_DIRS = ("checkpoints", "tb")


HISTORY = ("requeues", "requeue_signals")  # what a job's record says of its earlier attempts


class Plan(dict):
    """What a job does with its dir: `kept` (the earlier record, to return), or `resume` (the
    checkpoint) and `history` (keys for its record); a fresh job has neither."""


def plan(run_dir) -> Plan:
    """What this job does with the earlier attempt in `run_dir`, if any, after setting the dir up
    for it. Raises resume.ResumeError for a dir whose files cannot be trusted (links, a checkpoint
    that is not one)."""
    from srn_lightning.resume import check_no_links, resolve_resume

    run_dir = Path(run_dir)
    check_own_number(run_dir)
    ran = any((run_dir / n).exists() for n in (*RUN_FILES, *RUN_DIRS))
    if not ran:
        return Plan()
    check_no_links(run_dir, run_dir)
    try:
        earlier = record.read_metrics(run_dir)
    except (OSError, ValueError):  # killed before it wrote one
        earlier = {"status": "missing"}
    if earlier["status"] in KEPT:
        log.info("%s earlier: kept as it is (%s)", earlier["status"], run_dir)
        return Plan(kept=earlier)
    if earlier["status"] == "cancelled" and "signal" not in earlier:  # cancelled before it started
        start_over(run_dir)  # the record the launcher wrote for it: no attempt to count
        return Plan()
    history = {"requeues": int(earlier.get("requeues") or 0) + 1,  # the keys of HISTORY
               "requeue_signals": [*(earlier.get("requeue_signals") or []),
                                   earlier.get("signal") or ("killed" if earlier["status"] == "missing"
                                                             else earlier["status"])]}
    ckpt = None
    if earlier["status"] != "failed":
        _, ckpt = resolve_resume(run_dir)
    if ckpt is None:
        start_over(run_dir)
        log.warning("earlier attempt %s without a checkpoint to go on from: runs afresh in %s",
                    earlier["status"], run_dir)
        return Plan(history=history)
    remove_later_checkpoints(ckpt)
    log.warning("earlier attempt %s (%s): continues from %s", earlier["status"],
                earlier.get("signal", "no record"), ckpt)
    return Plan(resume=str(ckpt), history=history)


def check_own_number(run_dir: Path) -> None:
    """No other dir of the sweep has this job's number: a sweep continued with other overrides for
    it (its multirun.yaml changed by hand) would otherwise run a second job under that number."""
    from srn_lightning.errors import UserError

    num = run_dir.name.split("_", 1)[0]
    others = [p.name for p in run_dir.parent.glob(f"{num}_*")
              if p != run_dir and (p / ".hydra" / "overrides.yaml").is_file()]
    if num.isdigit() and others:
        raise UserError(f"job {num}: the sweep dir holds job {num} as {others[0]}, with other "
                        f"overrides than {run_dir.name} (its multirun.yaml changed?); not run")


def start_over(run_dir: Path) -> None:
    """Removes what an earlier attempt of the run wrote (not its .hydra/ or train.log)."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


def remove_later_checkpoints(ckpt: Path) -> None:
    """The checkpoint files beside `ckpt` that its ModelCheckpoint states do not name: written by
    the earlier attempt after that epoch (a best one), they would outlive the resumed run as a
    stale best."""
    from srn_lightning.resume import load_checkpoint

    state = load_checkpoint(ckpt, ckpt)
    named = {ckpt.name}
    for cb in state.get("callbacks", {}).values():
        if isinstance(cb, dict):
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if cb.get(key):
                    named.add(os.path.basename(cb[key]))
            named.update(os.path.basename(p) for p in cb.get("best_k_models") or {})
    for path in ckpt.parent.glob("*.ckpt"):
        if path.name not in named:
            log.info("removed %s: written after the epoch the run continues from", path.name)
            path.unlink()


def purge_step(resume) -> int | None:
    """The first TensorBoard step a run resumed from `resume` logs again: the optimizer steps done
    at its checkpoint (the per-step scalars are logged at the step's index from 0, the epoch's at
    its last step's). None for a run that is not resumed from a checkpoint."""
    from srn_lightning.resume import load_checkpoint

    if resume is None or not Path(resume).is_file():
        return None
    return int(load_checkpoint(Path(resume), resume)["global_step"])
