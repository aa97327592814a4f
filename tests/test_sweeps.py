"""Sweeps, for real and small (1 epoch): the report and its seed statistics, TensorBoard HParams, a
failing job, the joblib and submitit_local launchers, the optuna search, unique sweep dirs."""

import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata as hp_metadata

from .conftest import QUIET, child_env, start_cli

pytestmark = pytest.mark.slow  # every test here runs sweeps in child processes

CORES = len(os.sched_getaffinity(0))


def launch(args, cwd, data_dir) -> subprocess.Popen:
    """A sweep from the command line, as a user types it, 1 epoch per job. Sweeps on the basic
    launcher pass threads=1: torch's default threads only slow a model this small down."""
    return start_cli([*args, f"data.dir={data_dir}", "trainer.max_epochs=1", *QUIET], cwd,
                     stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def the_sweep_dir(cwd: Path) -> Path:
    (sweep,) = (cwd / "outputs" / "sweeps").glob("*/*")
    return sweep


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def metrics_of(sweep: Path, row: dict) -> dict:
    return json.loads((sweep / row["dir"] / "metrics.json").read_text())


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory, data_dir) -> Path:
    """2 clip modes x 2 lengths x 2 seeds with the basic launcher."""
    cwd = tmp_path_factory.mktemp("seed_sweep")
    rc, out = finish(launch(["-m", "clip=norm,none", "length=10,20", "seed=0,1", "threads=1"], cwd, data_dir))
    assert rc == 0, out[-3000:]
    return the_sweep_dir(cwd)


def test_the_report_holds_each_jobs_own_numbers_and_their_seed_statistics(seed_sweep):
    rows = read_csv(seed_sweep / "summary.csv")
    assert len(rows) == 8 and [int(r["job"]) for r in rows] == list(range(8))
    by_setting: dict = {}
    for row in rows:
        m = metrics_of(seed_sweep, row)
        assert row["status"] == m["status"] == "completed"
        assert (row["clip_mode"], int(row["length"]), int(row["seed"])) == (m["clip_mode"], m["length"], m["seed"])
        assert {f"clip={m['clip_mode']}", f"length={m['length']}", f"seed={m['seed']}"} <= set(row["overrides"].split())
        for key in ("dev_best", "test_acc", "W_pre_max", "W_pre_last", "total_pre_max", "total_pre_last", "fit_seconds"):
            assert float(row[key]) == m[key], key  # the very number, not a rounding of it
        by_setting.setdefault((m["clip_mode"], m["length"]), []).append(m)

    settings = read_csv(seed_sweep / "summary_by_setting.csv")
    assert len(settings) == 4
    for s in settings:
        jobs = by_setting[(s["clip_mode"], int(s["length"]))]
        assert s["setting"] == f"clip={s['clip_mode']} length={s['length']}"
        assert (s["jobs"], s["seeds"], s["status"]) == ("2", "0 1", "completed:2")
        for key in ("test_acc", "dev_best", "W_pre_max", "total_pre_max"):
            values = [j[key] for j in jobs]
            assert float(s[f"{key}_mean"]) == pytest.approx(statistics.mean(values), rel=1e-12)
            # the sample standard deviation (n - 1), as the report says it is
            assert float(s[f"{key}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-15)
            assert int(s[f"{key}_n"]) == 2
    # the seeds really differ: otherwise the std above would prove nothing
    assert any(float(s["W_pre_max_std"]) > 0 for s in settings)

    for row in rows:  # each job in its own dir, named after its overrides, with what a run leaves
        job = seed_sweep / row["dir"]
        assert job.name.startswith(f"{row['job']}_") and all(o in job.name for o in row["overrides"].split()
                                                             if o.split("=")[0] in ("clip", "length", "seed"))
        assert (job / "grad_norms.png").exists() and list((job / "tb").glob("events.*"))
    md = (seed_sweep / "summary.md").read_text()
    assert "8 jobs: 8 completed" in md and "sample standard deviation" in md
    assert md.count("(n=2)") == 4 * 4
    for suffix in ("png", "pdf"):
        assert (seed_sweep / f"sweep.{suffix}").stat().st_size > 10_000


def test_the_report_command_rebuilds_a_partial_sweep(seed_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(seed_sweep, sweep, ignore=shutil.ignore_patterns("*.ckpt", "events.*", "summary*", "sweep.*"))
    killed = next(p for p in sweep.iterdir() if p.name.startswith("3_"))
    expected = json.loads((killed / "metrics.json").read_text())
    (killed / "metrics.json").unlink()  # a job killed hard, before it could write a word

    proc = subprocess.run([sys.executable, "-m", "srn_lightning.report", str(sweep)],
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "missing" in proc.stdout
    rows = {r["dir"]: r for r in read_csv(sweep / "summary.csv")}
    assert len(rows) == 8
    row = rows[killed.name]
    assert row["status"] == "missing" and row["test_acc"] == ""
    # what it was, read back from the config the job saved before it ran
    assert (row["clip_mode"], int(row["length"]), int(row["seed"])) == (expected["clip_mode"], expected["length"], expected["seed"])
    assert all(r["status"] == "completed" for d, r in rows.items() if d != killed.name)

    (setting,) = [s for s in read_csv(sweep / "summary_by_setting.csv")
                  if (s["clip_mode"], int(s["length"])) == (expected["clip_mode"], expected["length"])]
    (survivor,) = [r for d, r in rows.items()
                   if d != killed.name and (r["clip_mode"], r["length"]) == (row["clip_mode"], row["length"])]
    assert setting["status"] == "completed:1 missing:1" and setting["test_acc_n"] == "1"
    assert float(setting["test_acc_mean"]) == float(survivor["test_acc"]) and setting["test_acc_std"] == ""
    assert (sweep / "sweep.png").exists()


def test_tensorboard_over_the_sweep_dir_has_every_jobs_hparams_and_metrics(seed_sweep):
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(seed_sweep))  # what `tensorboard --logdir <sweep dir>` does
    mux.Reload()
    content = mux.PluginRunToTagToContent(hp_metadata.PLUGIN_NAME)
    assert len(content) == 8
    signatures = set()
    for run, tags in content.items():
        m = json.loads((seed_sweep / Path(run).parent / "metrics.json").read_text())
        start = hp_metadata.parse_session_start_info_plugin_data(tags[hp_metadata.SESSION_START_INFO_TAG])
        hp = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        assert {k: hp[k] for k in ("clip_mode", "length", "lr", "seed", "reduction", "weight_decay",
                                   "batch_size", "hidden_size")} == {
            k: m[k] for k in ("clip_mode", "length", "lr", "seed", "reduction", "weight_decay",
                              "batch_size", "hidden_size")}
        assert hp["clip_val"] == (m["clip_val"] or 0.0) and hp["max_epochs"] == 1
        # the same keys, each of the same type, in every run: one table, one parallel-coordinates view
        signatures.add(tuple(sorted((k, v.WhichOneof("kind")) for k, v in start.hparams.items())))

        experiment = hp_metadata.parse_experiment_plugin_data(tags[hp_metadata.EXPERIMENT_TAG])
        names = {i.name.tag for i in experiment.metric_infos}
        assert names == {"hparams/test_acc", "hparams/dev_best", "hparams/W_pre_max", "hparams/total_pre_max"}
        for name in names:
            (event,) = mux.Scalars(run, name)
            assert event.value == pytest.approx(m[name.split("/")[1]], rel=1e-6)
    assert len(signatures) == 1


def test_a_failing_job_is_a_row_of_the_report_and_fails_the_sweep(tmp_path, data_dir):
    # the failing job is the last one: the report comes from its own end-of-job hook, since Hydra
    # skips the end-of-sweep hook after a failure
    rc, out = finish(launch(["-m", "lr=0.2,1e38,-1", "length=10", "threads=1"], tmp_path, data_dir))
    assert rc != 0
    sweep = the_sweep_dir(tmp_path)
    rows = {r["overrides"].split()[0]: r for r in read_csv(sweep / "summary.csv")}
    assert rows["lr=0.2"]["status"] == "completed" and float(rows["lr=0.2"]["test_acc"]) >= 0
    assert rows["lr=-1"]["status"] == "failed" and rows["lr=-1"]["error"]  # the reason, one line
    assert rows["lr=-1"]["error"] == metrics_of(sweep, rows["lr=-1"])["error"]
    assert "error: lr=-1.0: not allowed; lr must be a finite number > 0" in out  # its one line
    assert "job failed (overrides: lr=-1" in out  # logged with its overrides
    # a diverged job is a result: its row says so, and the jobs after it ran
    assert rows["lr=1e+38"]["status"] == "diverged"
    assert "3 jobs: 1 completed, 1 diverged, 1 failed" in (sweep / "summary.md").read_text()
    assert (sweep / "sweep.png").exists()
    # the sweep's table and its report's path, printed once, failed job or not
    assert out.count("sweep report: ") == 1 and "| lr=-1 | 0 | failed:1 |" in out


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory, data_dir) -> dict:
    """Three sweeps started together from one dir: joblib with 2 jobs, submitit_local with 2 jobs,
    a 2-trial optuna search. The joblib jobs generate their data into an empty dir, both at once.
    {name: (sweep dir, exit code, output)}; a sweep's dir is found by its launching process's pid."""
    specs = {
        "joblib": ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "clip=norm,none", "length=10"],
        "submitit": ["-m", "hydra/launcher=submitit_local", "clip=norm,none", "length=10"],
        "optuna": ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "length=10", "threads=1"],
    }
    cwd = tmp_path_factory.mktemp("side_by_side")
    data = {name: data_dir for name in specs} | {"joblib": cwd / "joblib_data"}
    procs = {name: launch(args, cwd, data[name]) for name, args in specs.items()}
    results = {name: finish(proc) for name, proc in procs.items()}
    sweeps = list((cwd / "outputs" / "sweeps").glob("*/*"))
    return {
        name: (next((d for d in sweeps if d.name.endswith(f"_{procs[name].pid}")), None), *results[name])
        for name in specs
    } | {"_all": sweeps, "_cwd": cwd}


def completed_report(sweep: Path, n: int) -> list[dict]:
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == n and all(r["status"] == "completed" for r in rows)
    assert (sweep / "sweep.png").exists() and (sweep / "summary.md").exists()
    return rows


def test_joblib_runs_the_jobs_in_parallel_with_a_share_of_the_cores_each(side_by_side, data_dir):
    sweep, rc, out = side_by_side["joblib"]
    assert rc == 0, out[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out
    for row in completed_report(sweep, 2):
        assert f"torch threads: {max(1, CORES // 2)}" in (sweep / row["dir"] / "train.log").read_text()
    generated = side_by_side["_cwd"] / "joblib_data" / "10"
    for split in ("train", "dev", "test"):  # written by both jobs at once, intact
        assert (generated / f"{split}.txt").read_bytes() == (data_dir / "10" / f"{split}.txt").read_bytes()


def test_a_parallel_sweep_says_which_job_each_line_is_from_and_ends_with_its_table(side_by_side):
    sweep, rc, out = side_by_side["joblib"]
    assert rc == 0, out[-3000:]
    lines = out.splitlines()
    # what the jobs log (the launching process's own lines are Hydra's [HYDRA] ones and the table)
    from_jobs = [ln for ln in lines if "][srn_lightning.train][" in ln or "][lightning" in ln or "py.warnings" in ln]
    assert from_jobs and all(ln.startswith(("[job 0] ", "[job 1] ")) for ln in from_jobs), from_jobs
    assert {ln[:7] for ln in from_jobs} == {"[job 0]", "[job 1]"}
    assert sum("completed after 1 epoch (" in ln for ln in from_jobs) == 2  # each job's answer
    assert not any(text in out for text in ("GPU available", "TPU available", "Tip:"))
    # the by-setting table of summary.md and the report's path, once, at the end
    md = (sweep / "summary.md").read_text().splitlines()
    start = md.index("| setting | seeds | status | test acc | dev best | max W norm (pre) | max total norm (pre) |")
    table = md[start:start + 4]
    assert len(table) == 4 and table[-1].startswith("| clip=")
    at = lines.index(table[0])
    assert lines[at:at + 4] == table and out.count(table[0]) == 1
    report_line = f"sweep report: {(sweep / 'summary.md').relative_to(side_by_side['_cwd'])}"
    assert out.count("sweep report: ") == 1 and lines[at + 5] == report_line


def test_submitit_local_runs_each_job_as_its_own_process(side_by_side):
    sweep, rc, out = side_by_side["submitit"]
    assert rc == 0, out[-3000:]
    completed_report(sweep, 2)
    job_logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2 and len({p.parent.name for p in job_logs}) == 2
    for log in job_logs:  # the training ran there, in the process submitit started
        assert "torch threads: 1" in log.read_text()


def test_the_optuna_search_maximizes_dev_accuracy_over_lr_and_threshold(side_by_side):
    sweep, rc, out = side_by_side["optuna"]
    assert rc == 0, out[-3000:]
    jobs = [metrics_of(sweep, r) for r in completed_report(sweep, 2)]
    for m in jobs:
        assert m["clip_mode"] == "norm" and 0.01 <= m["lr"] <= 1.0 and 0.1 <= m["clip_val"] <= 50.0
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"lr", "clip.val"}
    assert result["best_value"] == pytest.approx(max(m["dev_best"] for m in jobs))
    (best,) = [m for m in jobs if m["lr"] == pytest.approx(result["best_params"]["lr"])]
    assert best["dev_best"] == pytest.approx(result["best_value"])


def test_sweeps_started_together_never_share_a_dir(side_by_side):
    # three sweeps launched at once from one dir: each in a dir of its own, named to the microsecond
    # and after the process that launched it (unique on a machine, whatever the clock says)
    assert len(side_by_side["_all"]) == 3
    for name in ("joblib", "submitit", "optuna"):
        sweep = side_by_side[name][0]
        assert sweep is not None and re.fullmatch(r"\d\d-\d\d-\d\d\.\d{6}_\d+", sweep.name), name


def test_the_slurm_launcher_config_asks_for_what_a_job_needs(make_cfg):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from srn_lightning.config import CONFIG_DIR
    from srn_lightning.console import job_threads

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.srn_lightning_launcher.SlurmLauncher"  # the project's wait
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb, launcher.partition) == (30, 2, 4, None)
    assert launcher.max_num_timeout == 50  # a job at its time limit is requeued and continues
    assert launcher.submitit_folder.startswith(cfg.hydra.sweep.dir + "/.submitit")  # logs with the jobs
    instantiate(launcher)  # a launcher Hydra can build; submitting needs a cluster
    assert job_threads(make_cfg(), launcher) == 2  # torch uses the cores Slurm gives the job
    assert job_threads(make_cfg("threads=3"), launcher) == 3


def test_the_memory_experiment_reports_accuracy_against_length_per_cell(tmp_path, data_dir):
    from srn_lightning import report_jobs, report_summary

    rc, out = finish(launch(["-m", "experiment=memory", "model=srn,lstm", "length=10,20", "threads=1"],
                            tmp_path, data_dir))
    assert rc == 0, out[-3000:]
    sweep = the_sweep_dir(tmp_path)
    jobs = read_csv(sweep / "summary.csv")
    assert {(r["cell"], r["optimizer"], r["length"], r["batch_size"]) for r in jobs} == {
        (cell, "adam", length, "8") for cell in ("srn", "lstm") for length in ("10", "20")}
    settings = {r["setting"] for r in read_csv(sweep / "summary_by_setting.csv")}
    assert settings == {f"model={c} length={n}" for c in ("srn", "lstm") for n in (10, 20)}
    rows = [report_jobs.read_job(int(r["job"]), sweep / r["dir"], sweep) for r in jobs]
    accuracy = report_summary.figure_data(rows)["accuracy"]  # what the figure's bottom panel draws
    assert set(accuracy) == {"model=srn", "model=lstm"}
    data = report_summary.figure_data(rows)
    assert data["x_key"] == "length"  # accuracy against the length, on a numeric axis
    assert all([p[0] for p in points] == [10, 20] for points in accuracy.values())
    assert (sweep / "sweep.png").stat().st_size > 10_000
