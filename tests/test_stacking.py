"""The project's sweeper (srn_lightning/stacking.py): the seeds of each setting launched as one
job, each seed's dir, number, `.hydra/` and record those of the plain sweep
(`hydra.sweeper.stack_seeds=false`, made in the same test), the report the same."""

import csv
import json
import subprocess

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode

from srn_lightning import seed_groups, stacking
from srn_lightning.config import CONFIG_DIR

from .conftest import QUIET, run_cli

BATCH = [
    ["model=srn", "length=10", "seed=0"], ["model=srn", "length=10", "seed=1"],
    ["model=lstm", "length=10", "seed=0"], ["model=lstm", "length=10", "seed=1"],
    ["model=srn", "length=20", "seed=0"], ["model=srn", "length=20", "seed=1"],
]


def test_the_jobs_of_a_batch_that_differ_only_in_seed_are_one_group():
    assert seed_groups.seed_groups(BATCH) == [[0, 1], [2, 3], [4, 5]]
    # the batch's order is the plain sweep's (seed innermost or not)
    by_seed = [BATCH[i] for i in (0, 2, 4, 1, 3, 5)]
    assert seed_groups.seed_groups(by_seed) == [[0, 3], [1, 4], [2, 5]]


def test_groups_are_split_while_the_launcher_would_have_a_worker_waiting():
    assert stacking.spread([[0, 1, 2, 3, 4]], 2) == [[0, 1, 2], [3, 4]]
    assert stacking.spread([[0, 1, 2, 3, 4]], 1) == [[0, 1, 2, 3, 4]]
    assert stacking.spread([[0, 1, 2], [3, 4, 5]], 2) == [[0, 1, 2], [3, 4, 5]]
    assert stacking.spread([[0, 1], [2]], 4) == [[0], [1], [2]]
    assert stacking.side_by_side({"n_jobs": 2}) == 2 and stacking.side_by_side({}) == 1


def test_groups_side_by_side_start_with_the_longest_sequences():
    assert stacking.longest_first(BATCH, [[0, 1], [2, 3], [4, 5]]) == [[4, 5], [0, 1], [2, 3]]
    assert stacking.longest_first([["lr=1"], ["lr=2"]], [[0], [1]]) == [[0], [1]]


def test_a_job_without_a_seed_of_its_own_is_a_group_alone():
    batch = [["lr=0.1"], ["lr=0.2"], ["lr=0.1", "seed=007"], ["lr=0.1", "seed=7"], ["lr=0.1", "seed=8"]]
    assert seed_groups.seed_groups(batch) == [[0], [1], [2], [3, 4]]


def test_a_group_travels_as_its_first_jobs_overrides_with_its_members_in_the_hydra_namespace():
    overrides = seed_groups.group_overrides(BATCH, [4, 5], first_num=10)
    assert overrides == ["model=srn", "length=20", "seed=0", "hydra.sweeper.group=[[14,0],[15,1]]",
                         "hydra.sweep.subdir=.stacked/14"]
    assert seed_groups.member_overrides(BATCH[4], 1) == BATCH[5]
    # what a launcher that accounts for each job (the Slurm one) reads back
    assert seed_groups.members(overrides, 2) == [(14, BATCH[4]), (15, BATCH[5])]
    assert seed_groups.members(BATCH[0], 3) == [(3, BATCH[0])]


def composed_sweeper(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.sweeper


def test_the_sweeper_is_the_projects_and_optuna_replaces_it():
    assert composed_sweeper()._target_.endswith("SeedStackingSweeper")
    assert composed_sweeper().stack_seeds is True
    assert composed_sweeper("hydra.sweeper.stack_seeds=false").stack_seeds is False
    assert composed_sweeper("hparams_search=optuna")._target_.endswith("OptunaSweeper")


def test_a_batch_is_checked_to_compose_once_per_setting_and_a_bad_key_is_still_caught():
    from types import SimpleNamespace

    from hydra.errors import ConfigCompositionException

    composed = []

    class Loader:
        def load_sweep_config(self, master_config, sweep_overrides):
            composed.append(sweep_overrides)

    # made without its __init__: Hydra's plugin scan (in an earlier test of the process) loads
    # BasicSweeper's module again, and its __init__'s super() then names a class of its own
    sweeper = object.__new__(stacking.SeedStackingSweeper)
    sweeper.config, sweeper.hydra_context = {}, SimpleNamespace(config_loader=Loader())
    sweeper.validate_batch_is_legal(BATCH)
    assert composed == [BATCH[0], BATCH[2], BATCH[4]]  # one job of each setting

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        sweeper.config = loader.load_configuration("config", [], run_mode=RunMode.MULTIRUN)
        sweeper.hydra_context = SimpleNamespace(config_loader=loader)
        sweeper.validate_batch_is_legal([["length=10", "seed=0"], ["length=10", "seed=1"]])
        with pytest.raises(ConfigCompositionException, match="no_such_key"):
            sweeper.validate_batch_is_legal([["no_such_key=1", "seed=0"], ["no_such_key=1", "seed=1"]])


def hydra_yaml(job_dir) -> dict:
    """A job's .hydra/hydra.yaml, but for what names its sweep and the sweeper's on/off key."""
    import yaml

    hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    del hydra["sweep"]["dir"], hydra["sweeper"]["stack_seeds"], hydra["runtime"]["output_dir"]
    hydra["overrides"]["hydra"] = [o for o in hydra["overrides"]["hydra"] if "sweep" not in o]
    return hydra


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "fit_seconds"} for r in rows]


@pytest.mark.slow
def test_a_stacked_sweep_leaves_the_plain_sweeps_dirs_records_and_report(tmp_path, data_dir):
    args = ["-m", "model.input_size=8", "model.hidden_size=32,8", "length=10", "seed=0,1,2", "threads=1", f"data.dir={data_dir}",
            "trainer.max_epochs=2", *QUIET]
    sweeps = {}
    for name, extra in (("stacked", []), ("plain", ["hydra.sweeper.stack_seeds=false"])):
        proc = run_cli([*args, f"hydra.sweep.dir={name}", *extra], tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        sweeps[name] = (tmp_path / name, proc.stdout + proc.stderr)
    (stacked, said), (plain, plain_said) = sweeps["stacked"], sweeps["plain"]
    jobs = sorted(p.name for p in plain.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 6 and jobs[0].startswith("0_")
    assert sorted(p.name for p in stacked.iterdir() if (p / ".hydra").is_dir()) == jobs
    for job in jobs:
        for name in ("overrides.yaml", "config.yaml"):
            assert (stacked / job / ".hydra" / name).read_bytes() == (plain / job / ".hydra" / name).read_bytes()
        assert hydra_yaml(stacked / job) == hydra_yaml(plain / job)
        assert (stacked / job / "grad_norms.csv").read_bytes() == (plain / job / "grad_norms.csv").read_bytes()
        mine, theirs = (json.loads((d / job / "metrics.json").read_text()) for d in (stacked, plain))
        assert without_seconds([mine]) == without_seconds([theirs]) and "requeues" not in mine
    # the seeds of hidden size 32 trained as one group, in a hidden dir of their own; at hidden size
    # 8 a batched matmul sums in another order than the single one here: those seeds one by one
    assert "seeds 0, 1, 2 of one setting trained side by side" in said
    assert "seeds 0, 1, 2 run one by one: a batch of 44: the stacked gradient of linear.weight" in said
    assert sorted(p.name for p in (stacked / ".stacked").iterdir()) == ["0", "3"]  # by first job
    assert not (plain / ".stacked").exists() and "side by side" not in plain_said
    for name in ("summary.csv", "summary_by_setting.csv"):
        assert without_seconds(read_csv(stacked / name)) == without_seconds(read_csv(plain / name))
    by_setting = read_csv(stacked / "summary_by_setting.csv")
    assert [(r["seeds"], r["test_acc_n"]) for r in by_setting] == [("0 1 2", "3"), ("0 1 2", "3")]
