"""What a job costs on Slurm: an N-job sweep of 1-epoch jobs through the test cluster
(`hydra/launcher=slurm`, one CPU per job) against the basic launcher (the jobs one after another in
the launching process), alternated pair by pair. The overhead per job is the difference of their
wall times over N: Slurm's scheduling, a Python process and imports per job, submitit's pickles
and polling.

    bash scripts/slurm/start-slurm.sh && python -m benchmarks.cluster   # 3 alternated pairs, 4 jobs

Results: outputs/benchmarks/cluster.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import OUT, alternated, child_env, environment, save_json, wall
from srn_lightning.data import ensure_files

SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--out", default=str(OUT / "cluster.json"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="srn-cluster-"))
    ensure_files(work / "data", 20)
    env = child_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    sweep = ["-m", f"seed={','.join(map(str, range(args.jobs)))}", f"data.dir={work / 'data'}",
             "trainer.max_epochs=1", "threads=1", "trainer.enable_progress_bar=false"]

    def side(extra):
        return lambda tag: wall([sys.executable, "-m", "srn_lightning.train", *sweep, *extra,
                                 f"hydra.sweep.dir={work / tag}"], work, env)

    times = alternated({"basic": side([]), "slurm": side(SLURM)}, args.pairs)
    per_job = [(s - b) / args.jobs for b, s in zip(times["basic"], times["slurm"])]
    report = {"benchmark": "cluster", "jobs": args.jobs, "command": sweep, "slurm": SLURM, **environment(),
              "basic_s": times["basic"], "slurm_s": times["slurm"],
              "basic_median_s": statistics.median(times["basic"]),
              "slurm_median_s": statistics.median(times["slurm"]),
              "overhead_per_job_median_s": statistics.median(per_job),
              "overhead_per_job_s": per_job}
    out = save_json(args.out, report)
    print(f"| {args.jobs} jobs of 1 epoch | basic launcher | Slurm (test cluster) | overhead per job |")
    print("| --- | --- | --- | --- |")
    print(f"| median of {args.pairs} pairs | {report['basic_median_s']:.1f} s | "
          f"{report['slurm_median_s']:.1f} s | {report['overhead_per_job_median_s']:.1f} s |")
    print(f"written: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
