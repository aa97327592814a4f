"""What a run's figures cost to draw: `grad_norms` and `grad_time`, each as its PNG and PDF
(`srn_lightning.plots`), from the records of one run of the memory experiment (length 20, 40
epochs: 1,520 steps).

    python -m benchmarks.figures                 # 7 rounds after a warm-up
    python -m benchmarks.figures --rounds 11 length=35

Wall time of each figure's `plot_*` call (the figure built, drawn once for the PNG and once for the
PDF, both files written), median over the rounds, in one process after a warm-up round (matplotlib
imported, its fonts loaded). Results: outputs/benchmarks/figures.json and a table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
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
    out = save_json(args.out, {"benchmark": "figures", "setting": SETTING, "overrides": args.overrides,
                               **environment(), "steps": len(norms["step"]), "grad_time_rows": len(flow["step"]),
                               "seconds": times, "median_s": medians})
    print(f"| figure (PNG and PDF), {len(norms['step'])} steps | wall, median of {args.rounds} |")
    print("| --- | --- |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1000:.0f} ms |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
