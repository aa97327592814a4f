"""A sweep's seeds side by side: the project's sweeper (Hydra's basic one, plus this) launches the
jobs of a batch that differ only in `seed` as one job, through whatever launcher is configured,
and that job trains them as one stacked model (srn_lightning/stacked.py).

    python -m srn_lightning.train -m experiment=memory model=srn,lstm seed=0,1,2,3,4
    python -m srn_lightning.train -m ... seed=0,1,2,3,4 hydra.sweeper.stack_seeds=false  # one job a seed

Each seed keeps the job number, the dir and the `.hydra/` files (config, overrides) the plain sweep
gives it: the group's job composes each seed's config as a launcher does and makes its dir with
Hydra's own `run_job`; the group itself lives in a hidden dir of the sweep (`.stacked/<number of
its first job>/`, with its log), which the report does not count as a job. A group that cannot be
stacked (`stacked.stackable`), or whose seeds have an earlier attempt to take up (a sweep
continued or requeued), or one whose seed diverges, runs its seeds one by one, each as its own job
(`train.command.main`), the reason logged once.

This module is imported when Hydra looks for plugins, at every start: it imports nothing heavy.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

# Hydra's basic sweeper (its cartesian product, batches and job numbers are the plain sweep's) is
# importable from here only
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from srn_lightning.seed_groups import group_overrides, member_overrides, seed_groups

log = logging.getLogger(__name__)

def spread(groups: list[list[int]], parallel: int) -> list[list[int]]:
    """`groups`, the largest split in two (its first half the larger) until there are as many as
    the launcher runs side by side, or every group is one job: no core waits while a group trains."""
    groups = [list(g) for g in groups]
    while len(groups) < parallel and any(len(g) > 1 for g in groups):
        i = max(range(len(groups)), key=lambda k: len(groups[k]))
        half = (len(groups[i]) + 1) // 2
        groups[i:i + 1] = [groups[i][:half], groups[i][half:]]
    return groups


LENGTH = re.compile(r"length=([0-9]+)")


def longest_first(batch, groups: list[list[int]]) -> list[list[int]]:
    """`groups` with the longest sequences first (a step's cost grows with the length), the others
    in their order: with jobs side by side, the longest group does not start last and run alone."""
    def length(group):
        return max((int(m.group(1)) for o in batch[group[0]] if (m := LENGTH.fullmatch(o))), default=0)
    return sorted(groups, key=length, reverse=True)


def side_by_side(launcher_cfg) -> int:
    """How many jobs the launcher runs at once on this machine: joblib's `n_jobs` (negative: counted
    back from the cores, as joblib does); 1 for any other (the basic launcher; a cluster's jobs
    each have their own node)."""
    import os

    n_jobs = launcher_cfg.get("n_jobs")
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def job_offset() -> int:
    """What a job's number in its dir name adds to Hydra's: the jobs of the sweeps added to before."""
    import os

    from srn_lightning.preflight import JOB_OFFSET_ENV

    return int(os.environ.get(JOB_OFFSET_ENV, "0"))


class GroupingLauncher:
    """The configured launcher, handed the batch's jobs with the seeds of each setting as one job
    (as few as keep the launcher's parallel jobs busy)."""

    def __init__(self, launcher, parallel: int) -> None:
        self.launcher, self.parallel = launcher, parallel

    def launch(self, job_overrides, initial_job_idx: int):
        batch = [list(o) for o in job_overrides]
        groups = spread(seed_groups(batch), self.parallel)
        if self.parallel > 1:
            groups = longest_first(batch, groups)
        if all(len(g) == 1 for g in groups):
            return self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        log.info("seeds of one setting side by side: %d jobs as %d groups (hydra.sweeper.stack_seeds=false: "
                 "one job a seed)", len(batch), len(groups))
        grouped = [group_overrides(batch, g, initial_job_idx, dir_offset=job_offset()) for g in groups]
        return self.launcher.launch(grouped, initial_job_idx=initial_job_idx)

    def __getattr__(self, name: str):
        return getattr(self.launcher, name)


class GroupTask:
    """The task a launcher runs for a job: the project's (`train.command.main`) for a job of its own; for a
    group, its seeds (`run_members`)."""

    def __init__(self, task_function, hydra_context, config) -> None:
        self.task_function, self.hydra_context, self.config = task_function, hydra_context, config

    def __call__(self, cfg):
        from hydra.core.hydra_config import HydraConfig

        from srn_lightning import job_process

        hydra_cfg = HydraConfig.get()
        group = hydra_cfg.sweeper.get("group")
        if not group:
            return self.task_function(cfg)
        overrides = list(hydra_cfg.overrides.task)
        members = [(int(num), self.member_config(member_overrides(overrides, int(seed)), int(num)))
                   for num, seed in group]
        if job_process.wanted(hydra_cfg):  # a joblib worker: the group runs in a child it waits for
            return job_process.run_alone(lambda: run_members(self, members), cfg, hydra_cfg.runtime.output_dir,
                                         stands_for=[(c, member_dir(c, hydra_cfg)) for _, c in members])
        return run_members(self, members)

    def member_config(self, overrides: list[str], num: int):
        """A member's config as the launcher composes its job's, its id named as the launcher names
        the group's job: its number (basic), `<task>_<number>` (joblib), or the job it runs in (a
        cluster's job id)."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import open_dict

        group = HydraConfig.get().job
        group_id, group_num = group.id, str(group.num)
        if str(group_id) == group_num:
            job_id = num
        elif str(group_id).endswith(f"_{group_num}"):
            job_id = str(group_id)[: -len(group_num)] + str(num)
        else:
            job_id = group_id
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = job_id
            config.hydra.job.num = num
        return config

    def run_job(self, config, task_function):
        from hydra.core.utils import run_job

        return run_job(hydra_context=self.hydra_context, task_function=task_function, config=config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def member_dir(config, hydra_cfg) -> Path:
    """A member's job dir, as Hydra makes it for its job (hydra.sweep.dir / hydra.sweep.subdir)."""
    where = Path(config.hydra.sweep.dir) / str(config.hydra.sweep.subdir)
    return where if where.is_absolute() else Path(hydra_cfg.runtime.cwd) / where


def run_members(task: GroupTask, members: list) -> list:
    """The members of a group ((job number, config)): each one's dir and `.hydra/` made as its own
    job's, then trained as one stacked model if they can be, else one by one as their own jobs.
    Returns their returns (best dev accuracies); raises the first failure after every member ran."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import configure_log

    from srn_lightning.train.command import sweep_dir

    from srn_lightning import cluster

    group_hydra = HydraConfig.get()
    requeue = cluster.requeue_handler()  # before the group's own handlers replace it (as train.command.main)
    prepared = [task.run_job(config, prepare) for _, config in members]
    configure_log(group_hydra.job_logging, group_hydra.verbose)  # the group's own log, in its dir
    why = next((str(r.return_value) for r in prepared if r.status.name != "COMPLETED"), None)
    try:
        if why is None:
            why = next((f"{r.return_value[1]} holds an earlier attempt" for r in prepared
                        if not r.return_value[2]), None)
        if why is None:
            from srn_lightning import stacked

            cfgs = [r.return_value[0] for r in prepared]
            why = stacked.stackable(cfgs, bool(group_hydra.job.chdir))
            if why is None:
                try:
                    records = stacked.run_group([(r.return_value[0], r.return_value[1]) for r in prepared],
                                                sweep_dir(group_hydra),
                                                on_stop=lambda name: cluster.requeue_after(name, requeue))
                    return [m["dev_best"] or 0.0 for m in records]
                except stacked.Unstacked as err:
                    why = str(err)
                except SystemExit as stop:
                    raise worker_stop(stop, group_hydra) from None
    finally:
        from srn_lightning import locks

        for r in prepared:
            if r.status.name == "COMPLETED":
                locks.release(r.return_value[1])
    log.warning("seeds %s run one by one: %s", ", ".join(str(c.seed) for _, c in members), why)
    returns = [task.run_job(config, task.task_function) for _, config in members]
    failed = next((r for r in returns if r.status.name != "COMPLETED"), None)
    if failed is not None:
        raise failed.return_value
    return [r.return_value for r in returns]


def worker_stop(stop: SystemExit, hydra_cfg) -> BaseException:
    """What a group stopped by a signal (its seeds' records written) raises, by the command's rule
    (`train.command.main`): in a joblib worker or a local submitit job, the job fails alone
    (`JobInterrupted`: a worker that exits would take the pool and its other jobs with it); with
    the basic launcher or on Slurm, the process exits."""
    from srn_lightning.train.command import JobInterrupted

    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    if isinstance(stop.code, str) and "basic_launcher" not in launcher and "slurm" not in launcher.lower():
        return JobInterrupted(str(stop.code))
    return stop


def prepare(cfg):
    """A member's part of its job before training (`train.command.main`'s): its console and threads, its
    dir held, its config checked. Returns (config, dir, whether the dir is fresh)."""
    from hydra.core.hydra_config import HydraConfig

    from srn_lightning import attempts, console, interrupts, locks, preflight
    from srn_lightning.train.command import sweep_dir

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    console.setup_process(cfg, hydra_cfg, preflight.job_number(hydra_cfg.job.num))
    locks.hold(run_dir)
    try:
        interrupts.check_sweep(sweep_dir(hydra_cfg))
        attempts.check_own_number(run_dir)
        fresh = not any((run_dir / n).exists() for n in (*attempts.RUN_FILES, *attempts.RUN_DIRS))
        preflight.check_job(cfg, run_dir)
    except BaseException:
        locks.release(run_dir)
        raise
    return cfg, run_dir, fresh


class SeedStackingSweeper(BasicSweeper):
    """Hydra's basic sweeper, with the seeds of each setting in a batch launched as one job
    (`stack_seeds`, on by default; off: one job a seed, for a cluster that should spread them)."""

    def __init__(self, max_batch_size=None, params=None, stack_seeds: bool = True, group=None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.stack_seeds = stack_seeds

    def setup(self, *, hydra_context, task_function, config) -> None:
        if self.stack_seeds:
            task_function = GroupTask(task_function, hydra_context, config)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if self.stack_seeds:
            self.launcher = GroupingLauncher(self.launcher, side_by_side(config.hydra.launcher))

    def get_job_batch(self):
        if self.batch_index == 0:  # every job of the sweep, for the report (report.SWEEP_JOBS_ENV)
            import os

            from srn_lightning.report import SWEEP_JOBS_ENV

            os.environ[SWEEP_JOBS_ENV] = str(job_offset() + sum(len(batch) for batch in self.overrides))
        return super().get_job_batch()

    def validate_batch_is_legal(self, batch) -> None:
        """Hydra's check that every job's config composes before any is launched, made once per
        setting: the jobs of one setting differ only in a `seed=<n>` override, and a seed (an int)
        composes alike for every n (the memory experiment over 5 seeds: 12 configs composed, not 60)."""
        super().validate_batch_is_legal([batch[group[0]] for group in seed_groups(batch)])
