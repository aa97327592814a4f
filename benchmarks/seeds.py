"""Five seeds of one setting: the project's sweep (its seeds trained side by side, one stacked
model), the same sweep one job a seed (`hydra.sweeper.stack_seeds=false`), and five plain PyTorch
loops (benchmarks/plain_loop.py: fit only) split over the 2 cores, in rounds whose order rotates.

    python -m benchmarks.seeds                 # memory experiment, length 20, 40 epochs, 3 rounds
    python -m benchmarks.seeds --rounds 5 trainer.max_epochs=100

Both sweeps are `python -m srn_lightning.train -m experiment=memory length=20 seed=0,1,2,3,4
hydra/launcher=joblib hydra.launcher.n_jobs=2 <overrides>` from the command line, each in a fresh
process: wall time from start to exit (start-up, every run's test, figures and record included).
The plain loops: two processes, seeds 0, 1, 2 and 3, 4, each importing torch and the plain loop
(not Lightning) and fitting its seeds one after the other, each seed's config composed by this
process and handed over as JSON; wall time from their start until both end. Each side's CPU time
too: every process of it. OMP_NUM_THREADS=1 everywhere (unless set). Run it from the install it is
about: one with SciPy (the search extra) imports it in every Lightning process.
Results: outputs/benchmarks/seeds.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import OUT, child_env, environment, save_json

SETTING = ["experiment=memory", "length=20", "trainer.max_epochs=40"]
SEEDS = [0, 1, 2, 3, 4]
SWEEP = ["-m", f"seed={','.join(map(str, SEEDS))}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
SIDES = ("stacked", "one job a seed", "plain loops")


def timed(run) -> tuple[float, float]:
    """(wall, CPU) seconds of `run()`, which starts processes and waits for them: the CPU is every
    process of theirs that was waited for (each side's workers, jobs and drawing processes are)."""
    before, start = os.times(), time.perf_counter()
    run()
    after = os.times()
    return time.perf_counter() - start, (after.children_user + after.children_system
                                         - before.children_user - before.children_system)


def sweep(extra, cwd, env, overrides, tag) -> None:
    subprocess.run([sys.executable, "-m", "srn_lightning.train", *SWEEP, *SETTING, *overrides,
                    f"hydra.sweep.dir={cwd / tag}", *extra], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def plain_loops(configs: dict[int, str], cwd: Path, env, tag) -> None:
    """The five seeds' plain loops in two processes side by side; `configs`: each seed's resolved
    config as JSON."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.plain_loop", str(cwd / tag),
                               *(configs[seed] for seed in part)], cwd=cwd, env=env)
             for part in (SEEDS[:3], SEEDS[3:])]
    if any([p.wait() != 0 for p in procs]):  # both waited for (and their CPU counted) first
        raise RuntimeError("a plain loop failed")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seeds", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(OUT / "seeds.json"))
    parser.add_argument("overrides", nargs="*", help="added to every side, key=value")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from benchmarks.common import make_cfg

    work = Path(tempfile.mkdtemp(prefix="srn-seeds-"))
    # each seed's config, composed here as the command line would (the data files written once, not timed)
    configs = {seed: json.dumps(OmegaConf.to_container(make_cfg(work / "data", *SETTING, *args.overrides,
                                                                f"seed={seed}"), resolve=True))
               for seed in SEEDS}
    env = child_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    common = [f"data.dir={work / 'data'}", *args.overrides]
    run = {"stacked": lambda tag: sweep([], work, env, common, tag),
           "one job a seed": lambda tag: sweep(["hydra.sweeper.stack_seeds=false"], work, env, common, tag),
           "plain loops": lambda tag: plain_loops(configs, work, env, tag)}
    rows, cpu_rows = [], []
    for i in range(args.rounds):
        order = SIDES[i % 3:] + SIDES[: i % 3]  # each side first, second and last in turn
        times = {name: timed(lambda: run[name](f"{i}-{name.replace(' ', '_')}")) for name in order}
        rows.append({name: w for name, (w, _) in times.items()})
        cpu_rows.append({name: c for name, (_, c) in times.items()})
        print(f"round {i}: " + ", ".join(f"{k} {w:.1f} s (CPU {c:.1f} s)" for k, (w, c) in times.items()),
              file=sys.stderr)
    medians = {name: statistics.median(r[name] for r in rows) for name in SIDES}
    cpu_medians = {name: statistics.median(r[name] for r in cpu_rows) for name in SIDES}
    ratios = [r["stacked"] / r["plain loops"] for r in rows]
    report = {"benchmark": "seeds", "setting": SETTING, "sweep": SWEEP, "overrides": args.overrides,
              "omp_num_threads": env["OMP_NUM_THREADS"], **environment(),
              # an install with SciPy (the search extra) imports it in every Lightning process (~0.8 s)
              "scipy_installed": importlib.util.find_spec("scipy") is not None, "rounds": rows,
              "median_s": medians, "cpu_rounds": cpu_rows, "cpu_median_s": cpu_medians,
              "stacked_over_plain_loops_median": statistics.median(ratios),
              "stacked_over_plain_loops_max": max(ratios),
              "one_job_a_seed_over_stacked_median": statistics.median(r["one job a seed"] / r["stacked"] for r in rows)}
    out = save_json(args.out, report)
    print(f"| 5 seeds, {' '.join([*SETTING, *args.overrides])} | " + " | ".join(SIDES) + " | stacked / plain loops (max) |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| wall, median of {len(rows)} | " + " | ".join(f"{medians[n]:.1f} s" for n in SIDES)
          + f" | {report['stacked_over_plain_loops_median']:.2f} ({report['stacked_over_plain_loops_max']:.2f}) |")
    print("| CPU, median (every process) | " + " | ".join(f"{cpu_medians[n]:.1f} s" for n in SIDES) + " | |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
