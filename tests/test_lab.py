"""The Python API (srn_lightning.lab): a run in-process as the command line makes it, and a run or
sweep dir read back into the same objects."""

import csv
import json

import numpy as np
import pytest

from srn_lightning import lab
from srn_lightning.errors import UserError

from .conftest import QUIET, run_cli
from .test_report import make_job


def test_keywords_are_the_command_line_s_overrides():
    assert lab.as_overrides({"clip": "norm", "trainer__max_epochs": 3, "lr": 0.05, "resume": None,
                             "verbose": True, "trainer__devices": [0]}) == [
        "clip=norm", "trainer.max_epochs=3", "lr=0.05", "resume=null", "verbose=true", "trainer.devices=[0]"]


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("api") / "run"
    return lab.run("clip=norm", f"data.dir={data_dir}", *QUIET, trainer__max_epochs=2, run_dir=run_dir)


def test_a_run_returns_what_it_left_on_disk(api_run):
    run_dir = api_run.run_dir
    assert api_run.metrics == json.loads((run_dir / "metrics.json").read_text())
    assert api_run.metrics["status"] == "completed" and api_run.metrics["steps"] == 10
    assert api_run.metrics["clip_mode"] == "norm" and api_run.metrics["epochs"] == 2
    with (run_dir / "grad_norms.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(api_run.steps["step"]) == list(range(10))
    assert api_run.steps["W_pre"] == pytest.approx([float(r["W_pre"]) for r in rows], rel=0, abs=0)
    assert api_run.grad_time["h_20"].shape == (10,) and api_run.grad_time["sigma_max_U"][0] > 0
    assert api_run.figures == {"grad_norms": run_dir / "grad_norms.png", "grad_time": run_dir / "grad_time.png"}
    frame = api_run.frame()
    assert list(frame.index) == list(range(10)) and frame["U_pre"].tolist() == list(api_run.steps["U_pre"])
    assert api_run.overrides[0] == "clip=norm" and "trainer.max_epochs=2" in api_run.overrides


def test_a_run_leaves_the_command_line_s_files(api_run):
    run_dir = api_run.run_dir
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert (run_dir / ".hydra" / name).is_file()
    log = (run_dir / "train.log").read_text()
    assert "completed after 2 epochs (10 steps" in log and "phase: record" in log
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / ".lock").is_file()


def test_loading_a_run_dir_gives_the_same_run(api_run):
    loaded = lab.load(api_run.run_dir)
    assert loaded.metrics == api_run.metrics and loaded.figures == api_run.figures
    assert loaded.overrides == api_run.overrides
    for columns, again in ((api_run.steps, loaded.steps), (api_run.grad_time, loaded.grad_time)):
        assert list(columns) == list(again)
        assert all(np.array_equal(columns[c], again[c]) for c in columns)


def test_a_run_dir_that_holds_a_run_is_refused_and_left_alone(api_run, data_dir):
    before = (api_run.run_dir / "grad_norms.csv").read_bytes()
    with pytest.raises(UserError, match="a new directory: this one holds a run; continue it with resume="):
        lab.run(f"data.dir={data_dir}", run_dir=api_run.run_dir)
    assert (api_run.run_dir / "grad_norms.csv").read_bytes() == before


@pytest.mark.parametrize("overrides, keys, line", [
    ((), {"lr": -1}, "lr=-1.0: not allowed; lr must be a finite number > 0"),
    (("lrr=0.1",), {}, "lrr: no such config key (did you mean lr?); keys are listed in the README"),
    (("clip=sometimes",), {}, "clip=sometimes: no such option; clip must be one of none, norm, norm_each, value"),
])
def test_a_bad_config_is_one_line_and_creates_nothing(tmp_path, data_dir, overrides, keys, line):
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as err:
        lab.run(*overrides, f"data.dir={data_dir}", run_dir=run_dir, **keys)
    assert str(err.value) == line
    assert not run_dir.exists()


def test_a_resumed_run_goes_on_in_its_own_dir(api_run, tmp_path):
    with pytest.raises(UserError, match="not allowed with resume=; a resumed run goes on in its own dir"):
        lab.run(f"resume={api_run.run_dir}", run_dir=tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_a_run_that_fails_is_recorded_as_failed(tmp_path, data_dir, monkeypatch):
    from srn_lightning import plots

    def broken(*args, **kwargs):
        raise RuntimeError("no figure today")

    monkeypatch.setattr(plots, "plot_grad_norms", broken)
    from srn_lightning.errors import RunFailed

    with pytest.raises(RunFailed, match="failed during figures: RuntimeError: no figure today") as err:
        lab.run(f"data.dir={data_dir}", *QUIET, trainer__max_epochs=1, run_dir=tmp_path / "run")
    assert isinstance(err.value.__cause__, RuntimeError)  # what made it fail, for a traceback
    failed = lab.load(tmp_path / "run")
    assert failed.metrics["status"] == "failed" and "no figure today" in failed.metrics["error"]
    assert len(failed.steps["step"]) == 5  # what was measured is kept


def test_loading_a_sweep_dir_gives_its_jobs_and_settings(tmp_path):
    for num, (clip, seed, acc) in enumerate([("none", 0, 0.1), ("none", 1, 0.2), ("norm", 0, 0.5)]):
        make_job(tmp_path, num, [f"clip={clip}", "length=20", f"seed={seed}"], {"test_acc": acc},
                 w_norms=(1.0 + num, 2.0))
    sweep = lab.load(tmp_path)
    assert isinstance(sweep, lab.Sweep) and sweep.figure is None  # no report drawn yet
    assert [r.metrics["test_acc"] for r in sweep.runs] == [0.1, 0.2, 0.5]
    assert [list(r.steps["W_pre"]) for r in sweep.runs] == [[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]]
    assert [j["overrides"] for j in sweep.jobs] == ["clip=none length=20 seed=0", "clip=none length=20 seed=1",
                                                   "clip=norm length=20 seed=0"]
    none = next(s for s in sweep.by_setting if s["setting"] == "clip=none")
    assert none["test_acc_mean"] == pytest.approx(0.15) and none["test_acc_n"] == 2
    assert list(sweep.frame().index) == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="no job dirs"):
        lab.load(tmp_path / "0_clip=none,length=20,seed=0" / ".hydra")


@pytest.mark.slow
def test_the_api_and_the_command_line_write_the_same_files(tmp_path, data_dir):
    overrides = ["clip=norm_each", "length=10", f"data.dir={data_dir}", "trainer.max_epochs=3", *QUIET]
    proc = run_cli([*overrides, f"hydra.run.dir={tmp_path / 'cli'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lab.run(*overrides, run_dir=tmp_path / "api")

    def files(d):
        # TensorBoard names its event files after the time, host and pid
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and "tfevents" not in p.name)

    cli_dir, api_dir = tmp_path / "cli", tmp_path / "api"
    assert files(api_dir) == files(cli_dir)
    assert len(list((api_dir / "tb").glob("*tfevents*"))) == len(list((cli_dir / "tb").glob("*tfevents*")))
    for name in ("grad_norms.csv", "grad_time.csv", ".hydra/overrides.yaml", ".hydra/config.yaml"):
        assert (api_dir / name).read_bytes() == (cli_dir / name).read_bytes(), name
    api, cli = (json.loads((d / "metrics.json").read_text()) for d in (api_dir, cli_dir))
    assert api.pop("fit_seconds") > 0 and cli.pop("fit_seconds") > 0
    assert api == cli
