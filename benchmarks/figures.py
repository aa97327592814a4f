"""What a run's figures cost to draw: `grad_norms` and `grad_time`, each as its PNG and PDF
(`srn_lightning.plots`), from the records of one run of the memory experiment (length 20, 40
epochs: 1,520 steps).

    python -m benchmarks.figures                 # 7 rounds after a warm-up
    python -m benchmarks.figures --rounds 11 length=35

Wall time of each figure's `plot_*` call (the figure built, drawn once for the PNG and once for the
PDF, both files written), median over the rounds, in one process after a warm-up round (matplotlib
imported, its fonts loaded). Then a group of 3 seeds' figures (each seed's two, from the same
records), in alternated rounds: drawn one after the other in this process, and side by side as a
group draws them (`stacked.drawn_side_by_side`: a process forked for each figure, as many at a time
as there are cores), in a process that has imported torch and Lightning, as a group's has.
Results: outputs/benchmarks/figures.json and two tables.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from benchmarks.common import OUT, environment, make_cfg, quiet, save_json, silenced

SETTING = ["experiment=memory", "length=20", "trainer.max_epochs=40", "trainer.enable_progress_bar=false"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.figures", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=str(OUT / "figures.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides for the run, key=value")
    args = parser.parse_args(argv)
    from srn_lightning import plots
    from srn_lightning.lab import read_columns
    from srn_lightning.train import run

    quiet()
    work = Path(tempfile.mkdtemp(prefix="srn-figures-"))
    with silenced():
        run(make_cfg(work / "data", *SETTING, *args.overrides), work / "run")
    norms, flow = read_columns(work / "run" / "grad_norms.csv"), read_columns(work / "run" / "grad_time.csv")
    figures = {"grad_norms": lambda out: plots.plot_grad_norms(norms, out, title="a title"),
               "grad_time": lambda out: plots.plot_grad_time(flow, norms, out, title="a title")}
    times = {name: [] for name in figures}
    for i in range(args.rounds + 1):  # round 0 warms up
        for name, draw in figures.items():
            start = time.perf_counter()
            draw(work / f"{name}-{i}")
            if i:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    group = group_times(norms, flow, work, args.rounds)
    out = save_json(args.out, {"benchmark": "figures", "setting": SETTING, "overrides": args.overrides,
                               **environment(), "steps": len(norms["step"]), "grad_time_rows": len(flow["step"]),
                               "seconds": times, "median_s": medians, "group_of_3_seeds_s": group,
                               "group_of_3_seeds_median_s": {k: statistics.median(v) for k, v in group.items()}})
    print(f"| figure (PNG and PDF), {len(norms['step'])} steps | wall, median of {args.rounds} |")
    print("| --- | --- |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1000:.0f} ms |")
    print(f"\n| a group of 3 seeds' figures, {environment()['cpus']} cores | one after the other | side by side |")
    print("| --- | --- | --- |")
    print(f"| wall, median of {args.rounds} | " + " | ".join(f"{statistics.median(v) * 1000:.0f} ms" for v in group.values())
          + " |")
    print(f"\nwritten: {out}")


def group_times(norms: dict, flow: dict, work: Path, rounds: int) -> dict[str, list[float]]:
    """Wall seconds of a group of 3 seeds' figures, one after the other and side by side, rounds
    alternated (after a warm-up round of each)."""
    import torch  # noqa: F401  as in a group's process: forked with them
    import lightning.pytorch  # noqa: F401

    from srn_lightning import measurements, stacked

    every = {"grad_norms": norms, "grad_time": flow}
    times = {"one after the other": [], "side by side": []}
    for i in range(rounds + 1):
        for side in times:
            calls = [call for seed in range(3) for call in (
                (partial(measurements.draw_grad_norms, keep_steps=None), (norms, every, work / f"{i}{side}{seed}n", "t")),
                (measurements.draw_grad_time, (flow, every, work / f"{i}{side}{seed}t", "t")))]
            start = time.perf_counter()
            if side == "side by side":
                list(stacked.drawn_side_by_side(calls, processes=len(calls)))  # as many as the cores
            else:
                [draw_one(*args) for draw_one, args in calls]
            if i:
                times[side].append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    main()
