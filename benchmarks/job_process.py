"""What running each joblib job in a process of its own costs (srn_lightning/job_process.py).

    python -m benchmarks.job_process                              # start cost only
    python -m benchmarks.job_process --before /tmp/srn-before     # and a joblib sweep, side by side

1. Start cost of a job's process, in this process: a child forked from a process that has imported
   torch, Lightning and the project (what a joblib worker is when it forks), round trip of a job
   that does nothing (fork, run, send its result, exit, reaped), median of `--forks`; against a
   fresh interpreter that imports the same (what a spawned child would pay before its job could
   start), median of `--spawns`. Also: the OS threads of the forking process.
   And a run of one epoch (`trainer.max_epochs=1`, one thread) in this process against the same run
   in a forked child (what each job of a worker does now, the round trip included), alternated,
   one warm-up each, median of `--runs`: what a job's process costs a job once its worker is warm.
2. With `--before CHECKOUT` (a copy of the project without it, e.g. `git archive <commit> | tar -x
   -C DIR`): the wall time of the 6-job sweep `-m clip=norm,value,none length=10,20` with
   `hydra/launcher=joblib hydra.launcher.n_jobs=2`, this checkout and that one alternated,
   `--repeats` pairs, each in fresh processes from its checkout (OMP_NUM_THREADS=1), and the torch
   threads each job logged.

Results: outputs/benchmarks/job_process.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import OUT, REPO, environment, make_cfg, quiet, save_json, silenced, wall
from srn_lightning.data import ensure_files

SWEEP = ["-m", "clip=norm,value,none", "length=10,20", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
IMPORTS = "import lightning.pytorch, cloudpickle, srn_lightning.train"


def fork_round_trip() -> float:
    from srn_lightning import job_process

    start = time.perf_counter()
    job_process.run_alone(lambda: None, None, None)
    return time.perf_counter() - start


def spawn_start() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], cwd=REPO, check=True)
    return time.perf_counter() - start


def run_seconds(cfg, work: Path, forked: bool) -> float:
    """A run's wall seconds, in this process or in a forked child (its round trip included)."""
    from srn_lightning import job_process
    from srn_lightning.train import run

    start = time.perf_counter()
    with silenced():
        if forked:
            job_process.run_alone(lambda: run(cfg, tempfile.mkdtemp(dir=work)), cfg, None)
        else:
            run(cfg, tempfile.mkdtemp(dir=work))
    return time.perf_counter() - start


def sweep_wall(checkout: Path, work: Path, data: Path) -> tuple[float, list[int]]:
    """The sweep's wall seconds, and the torch threads each of its jobs logged."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("PYTHONPATH", None)  # the checkout's own package: `-m` puts its dir first
    out = Path(tempfile.mkdtemp(dir=work))
    seconds = wall([sys.executable, "-m", "srn_lightning.train", *SWEEP, f"data.dir={data}",
                    f"hydra.sweep.dir={out}", "trainer.enable_progress_bar=false"], checkout, env)
    threads = [int(m) for log in sorted(out.glob("*/train.log"))
               for m in re.findall(r"torch threads: (\d+)", log.read_text())]
    return seconds, threads


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.job_process", description=__doc__.split("\n")[0])
    parser.add_argument("--forks", type=int, default=30)
    parser.add_argument("--spawns", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="alternated runs, in this process and forked")
    parser.add_argument("--before", type=Path, help="a checkout without a job's own process: sweeps side by side")
    parser.add_argument("--repeats", type=int, default=3, help="alternated sweep pairs")
    parser.add_argument("--out", default=str(OUT / "job_process.json"))
    args = parser.parse_args(argv)

    exec(IMPORTS)  # noqa: S102  the forking process as a joblib worker is when it forks

    threads_at_fork = len(os.listdir("/proc/self/task"))
    fork_round_trip()  # warm-up
    forks = [fork_round_trip() for _ in range(args.forks)]
    spawns = [spawn_start() for _ in range(args.spawns)]
    quiet()
    work = Path(tempfile.mkdtemp(prefix="srn-job-process-"))
    cfg = make_cfg(work / "data", "trainer.max_epochs=1", "threads=1", "trainer.enable_progress_bar=false")
    runs = {"in_process": [], "forked": []}
    for i in range(args.runs + 1):  # the first of each: warm-up
        for forked in ((False, True) if i % 2 == 0 else (True, False)):
            runs["forked" if forked else "in_process"].append(run_seconds(cfg, work, forked))
    runs = {k: v[1:] for k, v in runs.items()}
    report = {"benchmark": "job_process", **environment(), "forks_s": forks, "spawns_s": spawns,
              "fork_median_s": statistics.median(forks), "spawn_median_s": statistics.median(spawns),
              "os_threads_at_fork": threads_at_fork, "runs_s": runs,
              "run_in_process_median_s": statistics.median(runs["in_process"]),
              "run_forked_median_s": statistics.median(runs["forked"])}
    print("| a job's process | start, median | n |")
    print("| --- | --- | --- |")
    print(f"| forked from the worker (torch, Lightning imported) | {report['fork_median_s'] * 1e3:.1f} ms | {len(forks)} |")
    print(f"| a fresh interpreter importing them | {report['spawn_median_s']:.2f} s | {len(spawns)} |")
    print(f"| a run of one epoch, in the process (a worker that runs its jobs itself) | {report['run_in_process_median_s']:.2f} s | {len(runs['in_process'])} |")
    print(f"| the same run in a forked child (round trip included) | {report['run_forked_median_s']:.2f} s | {len(runs['forked'])} |")
    print(f"\nOS threads of the forking process: {threads_at_fork}")

    if args.before is not None:
        for length in (10, 20):  # written once here, not timed
            ensure_files(work / "data", length)
        rows = []
        for i in range(args.repeats):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            row, threads = {}, {}
            for side in order:
                row[side], threads[side] = sweep_wall(REPO if side == "after" else args.before.resolve(),
                                                      work, work / "data")
            rows.append({**row, "ratio": row["after"] / row["before"], "torch_threads": threads})
            print(f"pair {i}: before {row['before']:.1f} s, after {row['after']:.1f} s", file=sys.stderr)
        ratios = [r["ratio"] for r in rows]
        report |= {"sweep": SWEEP, "before": str(args.before), "sweeps": rows,
                   "before_median_s": statistics.median(r["before"] for r in rows),
                   "after_median_s": statistics.median(r["after"] for r in rows),
                   "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
        print("\n| 6-job joblib sweep, n_jobs=2 | worker runs the job | job in its own process | ratio (min-max) |")
        print("| --- | --- | --- | --- |")
        print(f"| wall, median of {len(rows)} pairs | {report['before_median_s']:.1f} s | "
              f"{report['after_median_s']:.1f} s | {report['ratio_median']:.2f} "
              f"({report['ratio_min']:.2f}-{report['ratio_max']:.2f}) |")
    print(f"\nwritten: {save_json(args.out, report)}")


if __name__ == "__main__":
    main()
