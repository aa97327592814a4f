"""The sweep report's share of a sweep's wall time, on a synthetic 200-job sweep dir.

    python -m benchmarks.report                       # 200 jobs: 4 clip modes x 2 lengths x 25 seeds
    python -m benchmarks.report --seeds 5 --job-seconds 2

The jobs' files are made as a real sweep leaves them (metrics.json, a 250-row grad_norms.csv,
.hydra/, checkpoints, events, figure), one job after the other. The project's Hydra callback runs
its hooks as in the sweep: its start (`SweepReport.on_multirun_start`), its end-of-job hook after
each job (`on_job_end`; the last job's completes the report), and at the end its end-of-sweep hook
(which finds the report current). The report's time is measured; the jobs' own time is
simulated, `--job-seconds` a job (a 50-epoch job of the book's run with the basic launcher takes
about 2 s on this project's CPU machine, see benchmarks/README.md), on the clock the callback reads.
share = report time / (jobs' time + report time).

For comparison, a complete rebuild is timed every `--every` jobs: rebuilt after every job, as a
report that is always complete would be, the sweep would spend about the sum of those on its report
(interpolated between the measured points). Results: outputs/benchmarks/report.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from omegaconf import OmegaConf

from benchmarks.common import OUT, environment, save_json
from srn_lightning import record, report

CLIPS = {"none": None, "norm": 5.0, "value": 0.5, "norm_each": 5.0}
STEPS = 250


def grad_norm_rows(clip: str, length: int, seed: int) -> list[list]:
    """250 rows shaped like the real runs': without clipping the norms shoot up within 20 steps and
    die, with it they stay in the tens."""
    rng = np.random.default_rng([seed, length, len(clip)])
    t = np.arange(STEPS)
    peak, height, floor = rng.uniform(3, 20), np.exp(rng.normal(7, 1)), np.exp(rng.normal(-7, 2))
    if clip == "none":
        w = height * np.exp(-((t - peak) / 6.0) ** 2) + floor * np.exp(-t / 50) + 1e-9
    else:
        w = np.exp(rng.normal(3, 0.7)) * (1.5 + np.sin(t / 15 + peak))
    w = w * np.exp(rng.normal(0, 0.3, STEPS))
    rows = []
    for step in range(STEPS):
        pre = [float(np.float32(w[step] * f)) for f in (1.0, 0.9, 0.2, 1.5)]
        post = [min(v, 5.0) if clip != "none" else v for v in pre]
        rows.append([step, step // 5, float(np.float32(100 * rng.random())), *pre, *post])
    return rows


def make_job(sweep: Path, num: int, clip: str, length: int, seed: int) -> None:
    overrides = [f"clip={clip}", f"length={length}", f"seed={seed}"]
    job = sweep / f"{num}_{','.join(overrides)}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    cfg = {"clip": {"mode": clip, "val": CLIPS[clip]}, "length": length, "lr": 0.2, "seed": seed,
           "reduction": "sum", "weight_decay": 0.0, "batch_size": 64,
           "model": {"input_size": 32, "hidden_size": 32}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    rows = grad_norm_rows(clip, length, seed)
    (job / record.CSV_NAME).write_text(record.csv_text([record.COLUMNS, *rows]))
    for name, size in (("grad_norms.png", 40_000), ("grad_norms.pdf", 12_000), ("train.log", 1_500),
                       ("checkpoints/last.ckpt", 20_000), ("checkpoints/best-epoch07.ckpt", 20_000),
                       ("tb/events.out.tfevents.0", 150_000), ("tb/hparams.yaml", 300)):
        (job / name).parent.mkdir(exist_ok=True)
        (job / name).write_bytes(b"\0" * size)
    rng = np.random.default_rng([seed, length])
    cols = record.columns(rows)
    acc = float(np.float32(0.1 + (0.03 if clip != "none" else 0) + 0.02 * rng.random()))
    metrics = {"status": "completed", "clip_mode": clip, "clip_val": CLIPS[clip], "length": length,
               "lr": 0.2, "seed": seed, "reduction": "sum", "weight_decay": 0.0, "batch_size": 64,
               "hidden_size": 32, "epochs": 50, "steps": STEPS, "dev_best": acc,
               "best_checkpoint": "best-epoch07.ckpt", "test_acc": acc,
               **{k: record.float32_number(v) for k, v in record.norm_summary(cols).items()},
               "fit_seconds": 2.0}
    record.write_metrics(job, metrics)


def complete_rebuild(sweep: Path) -> float:
    start = time.perf_counter()
    report.write_report(sweep)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=25, help="seeds per setting (8 settings)")
    parser.add_argument("--job-seconds", type=float, default=2.0, help="simulated time of one job")
    parser.add_argument("--every", type=int, default=25, help="time a complete rebuild every N jobs")
    parser.add_argument("--keep", help="keep the synthetic sweep dir here (for a look at its figure)")
    parser.add_argument("--out", default=str(OUT / "report.json"))
    args = parser.parse_args(argv)
    sweep = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="srn-report-")) / "sweep"
    if sweep.exists():
        shutil.rmtree(sweep)
    sweep.mkdir(parents=True)
    config = OmegaConf.create({"hydra": {"mode": "MULTIRUN", "sweep": {"dir": str(sweep)},
                                         "runtime": {"cwd": str(sweep.parent)}}})
    from hydra.types import RunMode

    config.hydra.mode = RunMode.MULTIRUN
    callback = report.SweepReport()
    simulated = {"jobs_s": 0.0, "report_s": 0.0}
    callback.clock = lambda: simulated["jobs_s"] + simulated["report_s"] + (time.perf_counter() - start)

    jobs = list(itertools.product(CLIPS, (10, 20), range(args.seeds)))
    rebuilds, after_job, complete = 0, [], []
    os.environ[report.SWEEP_JOBS_ENV] = str(len(jobs))  # as the project's sweeper tells its jobs
    start = time.perf_counter()
    callback.on_multirun_start(config)  # the sweep's start: the first rebuild's pace
    for num, (clip, length, seed) in enumerate(jobs):
        make_job(sweep, num, clip, length, seed)  # the job's work, not timed
        simulated["jobs_s"] += args.job_seconds
        stamp = (sweep / report.STAMP_NAME).read_text() if (sweep / report.STAMP_NAME).exists() else None
        start = time.perf_counter()
        callback.on_job_end(config, None)
        spent = time.perf_counter() - start
        simulated["report_s"] += spent
        after_job.append(spent)
        rebuilds += (sweep / report.STAMP_NAME).read_text() != stamp
        if (num + 1) % args.every == 0 or num == 0:
            table = sweep / "summary.csv"
            before = table.read_bytes() if table.exists() else b""
            complete.append((num + 1, complete_rebuild(sweep)))  # for comparison, not in the sweep
            table.write_bytes(before)  # as it was: the end finds it current only if the sweep made it so
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        callback.on_multirun_end(config)
    final_s = time.perf_counter() - start
    report_s = simulated["report_s"] + final_s
    wall = simulated["jobs_s"] + report_s

    # every-job rebuilds, as before: the complete rebuild's cost, interpolated between the points
    ns, costs = zip(*complete)
    every_job_s = float(np.sum(np.interp(np.arange(1, len(jobs) + 1), ns, costs)))
    result = {
        "benchmark": "report", "jobs": len(jobs), "job_seconds": args.job_seconds, **environment(),
        "jobs_s": simulated["jobs_s"], "after_job_s": simulated["report_s"], "rebuilds_after_jobs": rebuilds,
        "after_job_median_s": statistics.median(after_job), "final_s": final_s, "report_s": report_s,
        "share": report_s / wall, "complete_rebuild_s": dict(complete),
        "every_job_rebuilds_s": every_job_s,
        "every_job_share": every_job_s / (simulated["jobs_s"] + every_job_s),
        "figure": str(sweep / "sweep.png"), "printed": printed.getvalue(),
    }
    out = save_json(args.out, result)
    print("| jobs | jobs' time (simulated) | report after jobs (rebuilds) | complete report at the end "
          "| report's share | rebuilt after every job: time, share |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {len(jobs)} | {simulated['jobs_s']:.0f} s | {simulated['report_s']:.1f} s ({rebuilds}) "
          f"| {final_s:.2f} s | {100 * result['share']:.1f}% "
          f"| {every_job_s:.0f} s, {100 * result['every_job_share']:.0f}% |")
    print("\ncomplete rebuild: " + ", ".join(f"{n} jobs {s:.2f} s" for n, s in complete))
    print(f"figure: {sweep / 'sweep.png'}\nwritten: {out}")


if __name__ == "__main__":
    main()
