"""Check first, create after: the checks before a run (preflight.CheckConfig, as Hydra calls it
before it makes the run's dir) create nothing, not even a dir, until every one has passed; and
each runs once in a run's process."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srn_lightning import preflight, resume
from srn_lightning.train import command
from srn_lightning.config import CONFIG_DIR

from .conftest import compose_cfg
from .test_faults import snapshot


def hydra_cfg(*overrides: str):
    """The run's config with Hydra's part, as the CheckConfig callback gets it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture
def launch_dir(tmp_path, monkeypatch):
    """Where a run is launched from: a finished run in it, no data dir yet (relative paths land here)."""
    done = tmp_path / "outputs" / "runs" / "done"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text('{"status": "completed"}\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


REFUSED = [
    ("trainer.accelerator=gpu" if not torch.cuda.is_available() else "trainer.accelerator=tpu",
     "trainer.accelerator"),
    ("+trainer.bogus_arg=1", "trainer.bogus_arg"),
    ("hydra.run.dir=outputs/runs/done", "hydra.run.dir"),
    ("lr=0", "lr"),
]


@pytest.mark.parametrize("override,key", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_refused_run_creates_no_dir_and_no_file(launch_dir, override, key):
    cfg = hydra_cfg("hydra.run.dir=outputs/runs/new", override)
    before = snapshot(launch_dir)
    with pytest.raises(SystemExit, match=f"^error: {key}"):
        preflight.CheckConfig().on_run_start(cfg)
    assert snapshot(launch_dir) == before  # no outputs/runs/new, no data/, no lock


def test_the_checks_pass_without_creating_the_dirs_they_check(launch_dir):
    cfg = hydra_cfg("data.dir=far/data")
    preflight.check_run_dir(launch_dir / "runs" / "deep" / "new", resume_target=None)
    preflight.check_job(cfg, launch_dir / "runs" / "deep" / "new")
    assert not (launch_dir / "runs").exists() and not (launch_dir / "far").exists()


def test_a_run_from_the_cli_is_checked_once(launch_dir, data_dir, monkeypatch):
    """CheckConfig checks the run before Hydra makes its dir; the run itself does not again."""
    calls = []
    check_job = preflight.check_job
    monkeypatch.setattr(preflight, "check_job", lambda *a: calls.append(a) or check_job(*a))
    monkeypatch.setattr("sys.argv", ["train", f"data.dir={data_dir}", "trainer.max_epochs=1",
                                     "+trainer.limit_train_batches=1", "trainer.enable_progress_bar=false",
                                     "hydra.run.dir=outputs/runs/once"])
    command.main()
    assert len(calls) == 1
    assert (launch_dir / "outputs" / "runs" / "once" / "metrics.json").is_file()


def test_a_checkpoint_is_read_once_for_every_check(launch_dir, monkeypatch):
    ckpt = launch_dir / "last.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "callbacks": {resume.MONITOR_STATE: {"rows": []}}}, ckpt)
    loads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or load(*a, **k))
    first = resume.load_checkpoint(ckpt, ckpt)
    assert resume.load_checkpoint(ckpt, ckpt) is first and len(loads) == 1
    torch.save({"state_dict": {"x": torch.zeros(1)}, "loops": {},
                "callbacks": {resume.MONITOR_STATE: {"rows": []}}}, ckpt)  # the file changed: read anew
    assert "x" in resume.load_checkpoint(ckpt, ckpt)["state_dict"] and len(loads) == 2


def test_a_resumed_run_reads_its_checkpoint_once(make_cfg, tmp_path, monkeypatch):
    """The checks read the checkpoint; the fit that resumes from it takes what they read."""
    from srn_lightning.train import run

    quick = ("+trainer.limit_train_batches=2", "grad_time=false")
    run(make_cfg("trainer.max_epochs=1", *quick), tmp_path)
    loads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or load(*a, **k))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    metrics = run(make_cfg("trainer.max_epochs=2", *quick, f"resume={ckpt}"), tmp_path)
    assert metrics["epochs"] == 2 and metrics["steps"] == 4
    assert len(loads) == 2  # last.ckpt once, for the checks and the fit; the best one for the test


@pytest.mark.parametrize("scontrol,why", [
    (None, "no scontrol on the PATH: this machine is not a Slurm login node"),
    ("echo 'Slurmctld(primary) at vm is DOWN'; echo '*****'; exit 1", "scontrol ping: Slurmctld(primary) at vm is DOWN"),
])
def test_a_slurm_sweep_without_a_controller_is_one_line_before_its_dir_exists(tmp_path, monkeypatch, scontrol, why):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if scontrol is not None:
        (bin_dir / "scontrol").write_text(f"#!/bin/sh\n{scontrol}\n")
        (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    cfg = compose_cfg("hydra/launcher=slurm")
    OmegaConf.update(cfg, "hydra", {"sweep": {"dir": str(tmp_path / "sweep")},
                                    "launcher": {"_target_": "hydra_plugins.srn_lightning_launcher.SlurmLauncher"}},
                     force_add=True)
    with pytest.raises(SystemExit) as stop:
        preflight.CheckConfig().on_multirun_start(cfg)
    assert str(stop.value) == (f"error: hydra/launcher=slurm: no Slurm controller answers ({why}); run the sweep "
                               "on a cluster's login node, or with hydra/launcher=joblib on this machine")
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_added_after_jobs_that_never_started_numbers_its_jobs_after_them(tmp_path):
    """A sweep of 3 jobs stopped after its job 0: jobs 1 and 2 have no dir yet, but numbers of
    their own (a continued sweep runs them as jobs 1 and 2)."""
    sweep_dir = tmp_path / "sweep"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    OmegaConf.update(cfg, "hydra.overrides.task", ["seed=0,1,2", "lr=0.1"])
    OmegaConf.update(cfg, "hydra.job.env_set", {"SRN_SWEEP_FIRST_JOB": "0"}, force_add=True)
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(OmegaConf.to_yaml(cfg))
    (sweep_dir / "0_lr=0.1,seed=0" / ".hydra").mkdir(parents=True)
    (sweep_dir / "0_lr=0.1,seed=0" / ".hydra" / "overrides.yaml").write_text("- seed=0\n- lr=0.1\n")
    assert preflight.first_job_number(sweep_dir, add=True) == 3
    OmegaConf.update(cfg, "hydra.overrides.task", ["seed=0", "lr=0.1,0.2"])  # a sweep of 2 jobs
    (sweep_dir / "multirun.yaml").write_text(OmegaConf.to_yaml(cfg))
    assert preflight.first_job_number(sweep_dir, add=True) == 2


def test_a_slurm_time_limit_no_longer_than_its_warning_is_refused_before_the_sweep_dir_exists(tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):  # the warning: 120 s before
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.timeout_min=1",
                                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], return_hydra_config=True)
    with pytest.raises(SystemExit) as stop:
        preflight.CheckConfig().on_multirun_start(cfg)
    assert str(stop.value) == ("error: hydra.launcher.signal_delay_s=120: not allowed; hydra.launcher.signal_delay_s "
                               "must be shorter than the job's time limit (hydra.launcher.timeout_min=1: 60 s), or "
                               "each attempt is told its time is up as it starts")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("setting, why", [
    ("hydra.sweeper.storage=sqlite:///optuna.db", "the search keeps its study in sqlite:///optuna.db: Optuna "
     "would go on from there with new trials, numbered from job 0 again, and leave the interrupted one "
     "unfinished; continue such a study into a new sweep dir (hydra.sweep.dir=...), or start the search "
     "with storage null"),
    ("hydra.sweeper.sampler.seed=null", "the search has no sampler seed (hydra.sweeper.sampler.seed): "
     "replayed, it would ask other trials than its jobs ran; not continued"),
])
def test_a_search_that_cannot_be_replayed_is_not_continued_in_one_line(tmp_path, setting, why):
    sweep_dir = tmp_path / "sweep"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hparams_search=optuna", setting], return_hydra_config=True)
    OmegaConf.update(cfg, "hydra.overrides.task", ["hparams_search=optuna"])
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(resume.ResumeError) as refused:
        resume.resume_argv(["-m", f"resume={sweep_dir}"])
    assert str(refused.value) == f"resume={sweep_dir}: {why}"
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["multirun.yaml"]


def test_a_sweep_dir_holding_a_job_its_configs_do_not_have_is_not_continued(tmp_path):
    sweep_dir = tmp_path / "sweep"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    OmegaConf.update(cfg, "hydra.overrides.task", ["seed=0,1"])  # jobs 0 and 1
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(OmegaConf.to_yaml(cfg))
    for name in ("0_seed=0", "2_seed=2"):
        (sweep_dir / name / ".hydra").mkdir(parents=True)
        (sweep_dir / name / ".hydra" / "overrides.yaml").write_text(f"- seed={name[0]}\n")
    with pytest.raises(resume.ResumeError) as refused:
        resume.resume_argv(["-m", f"resume={sweep_dir}"])
    where = sweep_dir / "2_seed=2" / ".hydra" / "overrides.yaml"
    assert str(refused.value) == (f"resume={sweep_dir}: {where} is the record of job 2, which no config of the "
                                  "sweep (multirun.yaml and the earlier multirun.<n>.yaml) has (changed by "
                                  "hand?); nothing continued")
