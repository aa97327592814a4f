"""A sweep on Slurm: who requeues a job, what a job does with Slurm's signals, and a launching
process that never waits for ever.

One mechanism requeues: submitit's, which the launcher submitted the job with. Lightning's own
Slurm handling (its SIGUSR1 auto-requeue and its "srun is available but not used" warning) is
turned off by giving the Trainer its cluster environment (`lightning_environment`).

- USR2 (Slurm's warning `--signal=USR2@120` before the time limit, or `scancel --signal=USR2` by
  hand) stops the run like Ctrl-C: its record says `interrupted` by SIGUSR2, then submitit's
  handler requeues the job (`requeue_after`), counting a time limit against `max_num_timeout`.
- SIGTERM is Slurm's preemption (PreemptMode=REQUEUE), `scontrol requeue` and `scancel`: the run
  stops at the next step with its record; a preempted job is then requeued by submitit's handler
  (`preempted`), one requeued by hand by Slurm itself, a cancelled one ends.
- A requeued job runs again in its own dir and continues from its last completed epoch
  (`srn_lightning.attempts`).

The launching process (`SlurmLauncher.launch`) waits for each job by its result file and by
`squeue`, so a job that ended without a result (cancelled, killed, failed outside Python) is
noticed within `GONE_AFTER` seconds, with or without accounting (`sacct`); its record then says
`cancelled` or `failed` with Slurm's reason, and the launching process ends with one line naming
every job that did not finish.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _PluginLauncher

from srn_lightning.errors import UserError
from srn_lightning.preflight import job_number

log = logging.getLogger(__name__)

REQUEUE_SIGNAL = signal.SIGUSR2  # submitit's (its `--signal=USR2@120`, and SUBMITIT_PREEMPT_SIGNAL)
GONE_AFTER = 10.0  # s a job may be out of squeue without a result file before it counts as ended
POLL = 1.0  # s between looks at the queue


# ---- inside a job ----------------------------------------------------------------------------------

def lightning_environment():
    """The Trainer's cluster environment: one process, one device, whatever the machine. Given
    explicitly, Lightning neither looks for Slurm (on a login node, where `srun` is on the PATH, its
    search prints "The `srun` command is available on your system but is not used") nor sets up
    its own requeue on SIGUSR1: submitit's is the one."""
    from lightning.fabric.plugins.environments import LightningEnvironment

    # The fit's checkpoint connector still asks `SLURMEnvironment.detect()` whether to resume from
    # Lightning's own `hpc_ckpt_*` files (which nothing writes here), and that question prints the
    # warning: it says nothing true of a run that chose its environment.
    warnings.filterwarnings("ignore", SRUN_WARNING)
    return LightningEnvironment()


SRUN_WARNING = "The `srun` command is available on your system but is not used"


def requeue_handler():
    """Submitit's handler of its requeue signal, when this process is a submitit job (None
    otherwise). Taken at the job's start: the run's own handler replaces it while the run runs,
    so that the run writes its record first (`requeue_after`)."""
    handler = signal.getsignal(REQUEUE_SIGNAL)
    owner = getattr(handler, "__self__", None)
    return handler if type(owner).__module__.startswith("submitit.") else None


def requeue_after(signal_name: str, handler) -> None:
    """After a run stopped by `signal_name` wrote its record: hand submitit's requeue signal, and a
    SIGTERM of preemption, to submitit's handler, which requeues the job (a time limit counts
    against the launcher's `max_num_timeout`) and exits. Nothing for any other stop, or outside a
    submitit job. (A preempted job that ends within its GraceTime is not requeued by Slurm: it
    ends FAILED, as any job that exits non-zero.)"""
    if handler is None:
        return
    if signal_name == REQUEUE_SIGNAL.name or (signal_name == "SIGTERM" and preempted()):
        log.warning("%s: the job is requeued by submitit and continues from its last completed "
                    "epoch", signal_name if signal_name != "SIGTERM" else "SIGTERM of preemption")
        handler(signal.Signals[signal_name], None)  # exits (SystemExit), or raises if it may not


def preempted() -> bool:
    """Whether Slurm is preempting this job: in its GraceTime the job is RUNNING with a
    `PreemptTime` (a SIGTERM of `scancel` or `scontrol requeue` leaves none)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    found = re.search(r"\bPreemptTime=(\S+)", out)
    return found is not None and found.group(1) not in ("None", "Unknown")


def requeues() -> int:
    """How many times Slurm requeued this job (0 outside Slurm)."""
    count = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(count) if count.isdigit() else 0


# ---- the launching process -----------------------------------------------------------------------

class SlurmLauncher(_PluginLauncher):
    """hydra-submitit-launcher's Slurm launcher with a wait that ends: every job is waited for by
    its result file and by `squeue`, a job gone from the queue without a result ends the wait for it
    (`GONE_AFTER`), and the launching process raises one line naming the jobs that did not finish
    once all have ended. The plugin's own `launch` waits on `results()`, which without `sacct`
    waits for ever for a job cancelled or killed, and stops at the first failed job."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        from srn_lightning import seed_groups
        from srn_lightning.report_jobs import find_jobs

        # The executor and its parameters as the plugin's launch makes them
        init_keys = {"max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in init_keys})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items()
                                      if k not in init_keys | {"submitit_folder"}})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{job_number(idx)} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                           Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*params))
        numbers = [",".join(str(job_number(n)) for n, _ in seed_groups.members(o, idx))
                   for idx, o in enumerate(job_overrides, start=initial_job_idx)]
        log.info("Slurm jobs: %s", ", ".join(f"#{n}={j.job_id}" for n, j in zip(numbers, jobs)))
        outcomes = wait(jobs)
        returns, unfinished = [], []
        for i, (job, (kind, value)) in enumerate(zip(jobs, outcomes)):
            if kind == "result" and getattr(value.status, "name", "") == "COMPLETED":
                returns.append(value)
                continue
            # the jobs it stands for: itself, or the seeds of a group (srn_lightning/stacking.py)
            for idx, overrides in seed_groups.members(job_overrides[i], initial_job_idx + i):
                num = job_number(idx)
                if kind == "result":
                    reason = f"failed: {last_line(value.return_value)}"
                else:
                    if not any(n == num for n, _ in find_jobs(sweep_dir)):  # never started
                        self.make_job_dir(overrides, idx)
                    reason = record_ended_job(sweep_dir, num, job, value)
                unfinished.append(f"job {num} (Slurm {job.job_id}) {reason}")
        if unfinished:
            raise UserError(f"{len(unfinished)} of {len(jobs)} jobs did not finish: "
                            + "; ".join(unfinished) + f"; continue with: python -m "
                            f"srn_lightning.train -m resume={sweep_dir}")
        return returns


    def make_job_dir(self, overrides, idx: int) -> None:
        """The dir of a job that never started (cancelled while pending), as Hydra would have made
        it: its overrides and config in .hydra/, so that it is a row of the report and a
        continued sweep runs it."""
        from omegaconf import OmegaConf, open_dict

        from srn_lightning.files import write_atomic

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = idx
        job_dir = Path(str(self.config.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        write_atomic(job_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(list(overrides)))
        with open_dict(cfg):
            del cfg["hydra"]
        write_atomic(job_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))


def register_launcher() -> None:
    """Makes the project's launcher known to Hydra. Hydra finds launchers by walking the
    `hydra_plugins` namespace package, which does not see a package installed in editable mode
    (`pip install -e .`): its own `register` does it by name."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.srn_lightning_launcher import SlurmLauncher as Registered

    Plugins.instance().register(Registered)


def last_line(value: Any) -> str:
    """The last line of an error or a traceback (what it says went wrong), at most 200 characters."""
    return (str(value).strip().splitlines() or [type(value).__name__])[-1][:200]


def queued_jobs() -> set[str] | None:
    """The ids (`123` or `123_4`, one per array task) of the jobs squeue lists; None if squeue
    does not answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.split())


def wait(jobs, clock=time.monotonic) -> list[tuple[str, Any]]:
    """Waits for every job; returns, per job, ("result", its JobReturn) or ("error", the error it
    raised), or ("gone", how it ended) for a job that left the queue without a result file."""
    outcomes: dict[int, tuple[str, Any]] = {}
    gone_since: dict[int, float] = {}
    while len(outcomes) < len(jobs):
        queued = queued_jobs()
        for i, job in enumerate(jobs):
            if i in outcomes:
                continue
            if job.paths.result_pickle.exists():
                try:
                    outcomes[i] = ("result", job.result())
                except Exception as err:  # the job raised: submitit's FailedJobError
                    outcomes[i] = ("error", err)
            elif queued is None or job.job_id in queued:
                gone_since.pop(i, None)
            elif clock() - gone_since.setdefault(i, clock()) >= GONE_AFTER:
                outcomes[i] = ("gone", how_it_ended(job))
        if len(outcomes) < len(jobs):
            time.sleep(POLL)
    return [outcomes[i] for i in range(len(jobs))]


# slurmstepd's line in a job's stderr when Slurm ends it: `*** JOB 12 ON node CANCELLED AT <time>
# [DUE TO TIME LIMIT|PREEMPTION|NODE FAILURE] ***`; there without accounting too
STEPD_LINE = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))? \*\*\*")


def how_it_ended(job) -> str:
    """Slurm's state of a job that ended without a result: sacct's (`CANCELLED by 0`, `FAILED`,
    `TIMEOUT`, `OUT_OF_MEMORY`, `NODE_FAIL`), else slurmstepd's line in the job's stderr (a job
    without one never started), else `ended without a result`."""
    try:
        state = job.get_info(mode="force").get("State")
    except Exception:  # no accounting: sacct fails
        state = None
    if state and state not in ("UNKNOWN", "PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
        return state
    try:
        matches = STEPD_LINE.findall(job.paths.stderr.read_text(errors="replace"))
    except FileNotFoundError:  # left the queue before it started: what takes a job out so is scancel
        return "CANCELLED before it started (no accounting to say more)"
    except OSError:
        matches = []
    if matches:
        due = matches[-1]
        return {"TIME LIMIT": "TIMEOUT", "NODE FAILURE": "NODE_FAIL"}.get(due, "CANCELLED"
                                                                           + (f" ({due.lower()})" if due else ""))
    return "ended without a result (no accounting to say why)"


def record_ended_job(sweep_dir: Path, num: int, job, how) -> str:
    """The record of a job that ended without a result: its metrics.json says `cancelled` or
    `failed` (with Slurm's reason in `error`), keeping what the job wrote itself (an interrupted
    record's phase, signal, epochs). Returns what the line of the launching process says."""
    from srn_lightning import record
    from srn_lightning.report_jobs import find_jobs

    how = last_line(how) if not isinstance(how, str) else how
    status = "cancelled" if how.startswith("CANCELLED") else "failed"
    reason = f"Slurm job {job.job_id} {how}"
    dirs = [d for n, d in find_jobs(sweep_dir) if n == num]
    if dirs:
        try:
            earlier = record.read_metrics(dirs[0])
        except (OSError, ValueError):
            earlier = {}
        if earlier.get("status") not in ("completed", "diverged", "failed"):  # a job's own failure says why
            if not earlier:
                from omegaconf import OmegaConf

                try:
                    earlier = record.config_summary(OmegaConf.load(dirs[0] / ".hydra" / "config.yaml"))
                except Exception:
                    earlier = {}
            rest = {k: v for k, v in earlier.items() if k not in ("status", "error")}
            record.write_metrics(dirs[0], {"status": status, "error": reason, **rest})
    return f"{status} ({how})"

