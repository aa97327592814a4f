"""Sweep throughput: the design card's 6-job sweep with Hydra's basic launcher (one job after another,
in one process) against the joblib launcher with two workers, side by side.

    python -m benchmarks.sweep                    # 3 alternated pairs
    python -m benchmarks.sweep --repeats 5 trainer.max_epochs=20

Both run `python -m srn_lightning.train -m clip=norm,value,none length=10,20 <overrides>` in fresh
processes from the same directory; joblib adds `hydra/launcher=joblib hydra.launcher.n_jobs=2`.
OMP_NUM_THREADS=1 for both (unless set): two workers with a two-thread pool each on two cores would
fight for them. Results: outputs/benchmarks/sweep.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import OUT, child_env, environment, save_json, wall
from srn_lightning.data import ensure_files

SWEEP = ["-m", "clip=norm,value,none", "length=10,20"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def sweep_wall(extra, cwd, env) -> float:
    return wall([sys.executable, "-m", "srn_lightning.train", *SWEEP, *extra], cwd, env)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(OUT / "sweep.json"))
    parser.add_argument("overrides", nargs="*", help="added to both sweeps, key=value")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="srn-sweep-"))
    for length in (10, 20):  # written once here, not timed
        ensure_files(work / "data", length)
    env = child_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    common = [f"data.dir={work / 'data'}", *args.overrides]
    rows = []
    for i in range(args.repeats):
        first, second = ("basic", "joblib") if i % 2 == 0 else ("joblib", "basic")
        row = {}
        for name in (first, second):
            row[name] = sweep_wall(common + (JOBLIB if name == "joblib" else []), work, env)
        rows.append({**row, "ratio": row["joblib"] / row["basic"]})
        print(f"pair {i}: basic {row['basic']:.1f} s, joblib {row['joblib']:.1f} s", file=sys.stderr)
    ratios = [r["ratio"] for r in rows]
    report = {"benchmark": "sweep", "command": SWEEP, "joblib": JOBLIB, "overrides": args.overrides,
              "omp_num_threads": env["OMP_NUM_THREADS"], **environment(), "runs": rows,
              "basic_median_s": statistics.median(r["basic"] for r in rows),
              "joblib_median_s": statistics.median(r["joblib"] for r in rows),
              "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
    out = save_json(args.out, report)
    print("| 6-job sweep | basic launcher | joblib, n_jobs=2 | joblib / basic (min-max) |")
    print("| --- | --- | --- | --- |")
    print(f"| wall, median of {len(rows)} | {report['basic_median_s']:.1f} s | {report['joblib_median_s']:.1f} s "
          f"| {report['ratio_median']:.2f} ({report['ratio_min']:.2f}-{report['ratio_max']:.2f}) |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
