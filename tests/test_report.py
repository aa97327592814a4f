"""The sweep report over job dirs made here, in-process: rows, seed statistics, a missing job."""

import csv
import json
import math
import os
import statistics

import pytest
import yaml

from srn_lightning import record, report, report_jobs, stacking


def make_job(sweep, num, overrides, metrics=None, w_norms=(5.0, 50.0, 0.5)):
    job = sweep / f"{num}_{','.join(overrides)}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    keys = dict(o.split("=") for o in overrides)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({
        "clip": {"mode": keys["clip"], "val": None}, "length": int(keys["length"]), "lr": 0.2,
        "seed": int(keys["seed"]), "reduction": "sum", "weight_decay": 0.0, "batch_size": 64,
        "model": {"hidden_size": 32}}))
    rows = [[i, 0, 1.0, w, w, w, w, w, w, w, w] for i, w in enumerate(w_norms)]
    (job / record.CSV_NAME).write_text(record.csv_text([record.COLUMNS, *rows]))
    if metrics is not None:
        record.write_metrics(job, {"status": "completed", "clip_mode": keys["clip"],
                                   "length": int(keys["length"]), "seed": int(keys["seed"]), **metrics})
    return job


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_report_rows_and_seed_statistics(tmp_path):
    acc = {(c, s): 0.1 + 0.07 * s + (0.2 if c == "norm" else 0) for c in ("none", "norm") for s in (0, 1, 2)}
    num = 0
    for clip in ("none", "norm"):
        for seed in (0, 1, 2):
            metrics = None if (clip, seed) == ("norm", 2) else {"test_acc": acc[clip, seed], "W_pre_max": 50.0}
            make_job(tmp_path, num, [f"clip={clip}", "length=20", f"seed={seed}"], metrics)
            num += 1
    paths = report.write_report(tmp_path)
    assert all(p.exists() for p in paths)

    jobs = read_csv(tmp_path / "summary.csv")
    assert [r["job"] for r in jobs] == [str(i) for i in range(6)]
    assert [r["status"] for r in jobs] == ["completed"] * 5 + ["missing"]
    assert jobs[5]["clip_mode"] == "norm" and jobs[5]["seed"] == "2"  # from its saved config

    by_setting = {r["setting"]: r for r in read_csv(tmp_path / "summary_by_setting.csv")}
    none, norm = by_setting["clip=none"], by_setting["clip=norm"]
    values = [acc["none", s] for s in (0, 1, 2)]
    assert float(none["test_acc_mean"]) == pytest.approx(statistics.mean(values))
    assert float(none["test_acc_std"]) == pytest.approx(statistics.stdev(values))
    assert (none["test_acc_n"], norm["test_acc_n"], norm["status"]) == ("3", "2", "completed:2 missing:1")
    assert "6 jobs: 5 completed, 1 missing" in (tmp_path / "summary.md").read_text()


def test_a_partly_written_csv_is_drawn_as_far_as_it_goes(tmp_path):
    job = make_job(tmp_path, 0, ["clip=none", "length=20", "seed=0"], {"test_acc": 0.1})
    with (job / record.CSV_NAME).open("a") as f:
        f.write("3,0,1.0,2")
    assert report_jobs.read_norms(job) == ([0, 1, 2], [5.0, 50.0, 0.5])


def test_the_report_writes_float32_numbers_and_their_statistics_without_binary_noise(tmp_path):
    import numpy as np

    for seed, acc in enumerate((0.11, 0.12)):
        make_job(tmp_path, seed, ["clip=none", "length=20", f"seed={seed}"],
                 {"test_acc": float(np.float32(acc)), "W_pre_max": float(np.float32(6934.12))})
    report.write_report(tmp_path)
    jobs = read_csv(tmp_path / "summary.csv")
    assert [j["test_acc"] for j in jobs] == ["0.11", "0.12"] and jobs[0]["W_pre_max"] == "6934.12"
    (setting,) = read_csv(tmp_path / "summary_by_setting.csv")
    assert setting["test_acc_mean"] == "0.115" and setting["W_pre_max_std"] == "0.0"


def test_after_a_job_the_report_is_rebuilt_only_when_due(tmp_path):
    make_job(tmp_path, 0, ["clip=none", "length=20", "seed=0"], {"test_acc": 0.1})
    assert report.update_report(tmp_path, clock=lambda: 1000.0)  # the first job: a report at once
    assert (tmp_path / "summary.csv").exists()
    stamp = json.loads((tmp_path / report.STAMP_NAME).read_text())
    make_job(tmp_path, 1, ["clip=none", "length=20", "seed=1"], {"test_acc": 0.2})
    due = 1000.0 + max(report.MIN_INTERVAL, stamp["seconds"] * (1 - report.REBUILD_SHARE) / report.REBUILD_SHARE)
    assert not report.update_report(tmp_path, clock=lambda: due - 0.1)  # too soon: left as it is
    assert len(read_csv(tmp_path / "summary.csv")) == 1
    assert report.update_report(tmp_path, clock=lambda: due + 0.1)
    assert len(read_csv(tmp_path / "summary.csv")) == 2


def test_the_sweeps_start_counts_as_a_rebuild_so_a_short_sweep_has_none_before_its_end(tmp_path, monkeypatch):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    sweep = tmp_path / "sweep"
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)},
                                         "runtime": {"cwd": str(tmp_path)}}})
    monkeypatch.setattr(report.atexit, "register", lambda *args: None)  # no complete report at pytest's exit
    callback = report.SweepReport()
    callback.clock = lambda: 1000.0
    callback.on_multirun_start(config)  # the sweep starts at 1000 s
    make_job(sweep, 0, ["clip=none", "length=20", "seed=0"], {"test_acc": 0.1})
    first = 1000.0 + 0.4 * 39  # a rebuild of 0.4 s, then 39 times as long before the next
    assert not report.update_report(sweep, clock=lambda: first - 0.1)
    assert not (sweep / "summary.csv").exists()
    assert report.update_report(sweep, clock=lambda: first + 0.1)
    assert len(read_csv(sweep / "summary.csv")) == 1


def test_the_job_whose_end_leaves_every_job_ended_completes_the_report_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv(report.SWEEP_JOBS_ENV, "3")  # a sweep of 3 jobs
    make_job(tmp_path, 0, ["clip=none", "length=20", "seed=0"], {"test_acc": 0.1})  # kept from before
    failed = {"status": "failed", "clip_mode": "none", "length": 20, "seed": 2}
    last = make_job(tmp_path, 2, ["clip=none", "length=20", "seed=2"])
    record.write_metrics(last, failed)
    os.utime(last / record.METRICS_NAME, (0, 0))  # an earlier sweep's attempt: it runs again in this one
    (tmp_path / "multirun.yaml").write_text("{}\n")  # the sweep starts
    assert report.update_report(tmp_path, clock=lambda: 1000.0)  # the first: no stamp yet
    soon = lambda: 1000.1  # noqa: E731  long before the next rebuild is due
    make_job(tmp_path, 1, ["clip=none", "length=20", "seed=1"], {"test_acc": 0.2})
    assert not report.update_report(tmp_path, clock=soon)  # job 2's failure is the earlier sweep's
    record.write_metrics(last, {**failed, "status": "interrupted"})  # it runs again, and is stopped
    assert not report.update_report(tmp_path, clock=soon)  # an interrupted job runs again
    record.write_metrics(last, failed)  # it fails in this sweep: every job has ended
    assert report.update_report(tmp_path, clock=soon)
    assert [j["status"] for j in read_csv(tmp_path / "summary.csv")] == ["completed", "completed", "failed"]
    assert not report.update_report(tmp_path, clock=soon)  # a kept job's end after it: complete already
    monkeypatch.setenv(report.SWEEP_JOBS_ENV, "4")  # a job of the sweep not started yet
    assert not report.update_report(tmp_path, clock=soon)


def test_the_sweeper_gives_its_jobs_the_number_of_job_dirs_the_sweep_ends_with(monkeypatch):
    from srn_lightning.preflight import JOB_OFFSET_ENV

    monkeypatch.setenv(JOB_OFFSET_ENV, "6")  # added to a sweep dir that holds jobs 0-5
    monkeypatch.setenv(report.SWEEP_JOBS_ENV, "0")  # set, so that it is put back as it was
    sweeper = object.__new__(stacking.SeedStackingSweeper)  # see tests/test_stacking.py
    sweeper.overrides, sweeper.batch_index = [[["seed=0"], ["seed=1"]], [["seed=2"]]], 0  # two batches
    assert sweeper.get_job_batch() == [["seed=0"], ["seed=1"]]
    assert os.environ[report.SWEEP_JOBS_ENV] == "9"


def test_many_seeds_of_a_setting_are_drawn_as_their_median_and_quartiles():
    from srn_lightning import plots

    curves = [([0, 1, 2], [1.0, 10.0, 5.0]), ([0, 1, 2], [2.0, 20.0, float("nan")]),
              ([0, 1], [3.0, 30.0]), ([0, 1, 2], [4.0, 40.0, 7.0]), ([0, 1, 2, 3], [5.0, 50.0, 9.0, float("nan")])]
    steps, median, low, high = plots.median_band(curves)
    assert steps == [0, 1, 2, 3]
    assert list(median[:3]) == [3.0, 30.0, 7.0] and list(low[:2]) == [2.0, 20.0] and list(high[:2]) == [4.0, 40.0]
    assert math.isnan(median[3])  # no curve has a number there


def test_a_search_s_many_settings_are_one_band_and_a_cloud_with_the_best_named(tmp_path):
    from srn_lightning import plots

    n = plots.LEGEND_MAX + 2  # more settings than a legend can name, one job each
    labels = [f"lr={0.01 * (k + 1):g}" for k in range(n)]
    panels = {("length=20", "clip=norm"): [(lab, [0, 1], [1.0 + k, 2.0 + k]) for k, lab in enumerate(labels)]}
    means = [0.1 + 0.05 * ((7 * k) % n) for k in range(n)]  # the best is not the last one drawn
    accuracy = {lab: [(20, m, None, 1)] for lab, m in zip(labels, means)}
    fig = plots.plot_sweep(panels, ["length=20"], ["clip=norm"], accuracy, "length", tmp_path / "s")
    top, bottom = fig.axes
    assert len(top.lines) == 1 and len(top.collections) == 1  # the median and its band, not n lines
    assert [t.get_text() for t in top.get_legend().get_texts()] == [f"median, 25-75% of {n} jobs"]
    texts = [t.get_text() for t in bottom.texts]
    best = labels[means.index(max(means))]
    assert texts == [f"best: {best} ({max(means):.3g})"]  # no "n=1" label per point
    assert bottom.get_legend() is None and (tmp_path / "s.png").exists()


def _nested_json(path):
    path.write_text("[" * 30_000 + "]" * 30_000)  # within the size bound, beyond any parser's stack


def _alias_bomb(path):  # 9 levels of 9 aliases: a few hundred bytes that expand to 9**9 strings
    lines = ['- &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"- &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    path.write_text("\n".join(lines) + "\n")


def _csv_row(job, text):
    with (job / record.CSV_NAME).open("a") as f:
        f.write(text)


SPOILED_JOBS = [  # (spoil the job dir, the reason its row gives)
    (lambda j: _nested_json(j / record.METRICS_NAME), "unreadable metrics.json: nested too deep"),
    (lambda j: (j / record.METRICS_NAME).write_text(" " * 70_000 + "{}"), "unreadable metrics.json: larger than 64 KiB"),
    (lambda j: _alias_bomb(j / ".hydra" / "overrides.yaml"),
     "unreadable .hydra/overrides.yaml: YAMLError: aliases are not allowed"),
    (lambda j: _csv_row(j, "3,0,1.0,1e308,1,1,1,1,1,1,1\n4,0,1,1,1,1,1,1,1,1,1\n"),
     "unreadable grad_norms.csv: "),  # finite, but beyond float32: no run writes it
    (lambda j: _csv_row(j, "3,0,1.0,one,1,1,1,1,1,1,1\n4,0,1,1,1,1,1,1,1,1,1\n"), "unreadable grad_norms.csv: "),
    (lambda j: (j / record.CSV_NAME).write_text("step,epoch\n0,0\n"), "unreadable grad_norms.csv: "),
]


@pytest.mark.parametrize("spoil,reason", SPOILED_JOBS, ids=[
    "deep-json", "huge-json", "yaml-alias-bomb", "csv-1e308", "csv-text", "csv-header"])
def test_a_job_whose_files_are_anything_is_one_unreadable_row_and_the_others_get_theirs(tmp_path, spoil, reason):
    good = make_job(tmp_path, 0, ["clip=none", "length=20", "seed=0"], {"test_acc": 0.5, "W_pre_max": 50.0})
    bad = make_job(tmp_path, 1, ["clip=none", "length=20", "seed=1"], {"test_acc": 0.25, "W_pre_max": 50.0})
    spoil(bad)
    paths = report.write_report(tmp_path)
    jobs = read_csv(tmp_path / "summary.csv")
    assert [r["status"] for r in jobs] == ["completed", "unreadable"]
    assert jobs[1]["error"].startswith(reason), jobs[1]["error"]
    assert jobs[0]["test_acc"] == "0.5" and good.name == jobs[0]["dir"]
    assert all(p.exists() for p in paths)  # the figure too


def test_the_figure_takes_the_largest_norms_a_run_can_write(tmp_path):
    make_job(tmp_path, 0, ["clip=none", "length=20", "seed=0"], {"test_acc": 0.5},
             w_norms=(3.4e38, 1e-45, 0.0, float("inf")))
    report.write_report(tmp_path)
    assert read_csv(tmp_path / "summary.csv")[0]["status"] == "completed"
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_the_report_command_on_a_dir_that_is_no_sweep_or_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    with pytest.raises(SystemExit) as stop:
        report.main([str(tmp_path / "plain")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "no job dirs" in err
    assert list((tmp_path / "plain").iterdir()) == []  # no lock file left in it

    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["clip=none", "length=20", "seed=0"], {"test_acc": 0.5})
    (sweep / "summary.csv").mkdir()  # a path the report cannot write, whoever runs it (root too)
    with pytest.raises(SystemExit) as stop:
        report.main([str(sweep)])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1
    assert err.startswith(f"python -m srn_lightning.report: error: {sweep}: the report cannot be written (")


def test_the_end_of_a_sweep_redraws_a_figure_that_a_stop_cut_short(tmp_path, capsys):
    make_job(tmp_path, 0, ["clip=none", "length=20", "seed=0"], {"test_acc": 0.1})
    report.write_report(tmp_path)
    (tmp_path / "sweep.png").unlink()  # a signal came as the last job's report was drawn
    report.SweepReport()._end(tmp_path)
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_a_sweep_whose_jobs_have_no_test_accuracy_yet_still_gets_its_figure(tmp_path):
    make_job(tmp_path, 0, ["clip=none", "length=20", "seed=0"], {"W_pre_max": 50.0})  # stopped before test
    make_job(tmp_path, 1, ["clip=none", "length=20", "seed=1"])  # still running: no metrics.json
    report.write_report(tmp_path)
    assert (tmp_path / "sweep.png").stat().st_size > 0
