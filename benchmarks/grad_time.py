"""What the gradient's flow through time costs: the project's run with `grad_time=true` (dL/dh_t at
every position and sigma_max(U), every step) against the same run with `grad_time=false`.

    python -m benchmarks.grad_time                          # the book's run, SRN and LSTM
    python -m benchmarks.grad_time --pairs 5 --cells srn trainer.max_epochs=20

Fit time only (`Trainer.fit`, as in benchmarks/parity.py), one warm-up pair, then pairs in
alternating order. Results: outputs/benchmarks/grad_time.json and a table on stdout.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from benchmarks.common import alternated, make_cfg, paired_setup, save_json, silenced
from benchmarks.parity import timed_trainer_fit


def fit_seconds(cfg, run_dir) -> float:
    from srn_lightning.train import run

    times: list = []
    with timed_trainer_fit(times):
        run(cfg, run_dir)
    return times[0][0]


def bench_cell(cell: str, overrides: list[str], pairs: int, work: Path) -> dict:
    cfgs = {on: make_cfg(work / "data", f"model={cell}", f"grad_time={on}", *overrides)
            for on in ("false", "true")}
    times = alternated({on: lambda tag, on=on: fit_seconds(cfgs[on], work / f"{cell}-{tag}")
                        for on in ("false", "true")}, pairs)
    off, on = statistics.median(times["false"]), statistics.median(times["true"])
    ratios = [b / a for a, b in zip(times["false"], times["true"])]
    return {"cell": cell, "pairs": pairs, "off_s": times["false"], "on_s": times["true"],
            "off_median_s": off, "on_median_s": on, "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}


def main(argv=None) -> None:
    args, work, report = paired_setup("grad_time", __doc__, argv, pairs=5, cells=["srn", "lstm"])
    report["results"] = []
    with silenced():
        for cell in args.cells:
            report["results"].append(bench_cell(cell, args.overrides, args.pairs, work))
            save_json(args.out, report)
    print("| cell | fit, grad_time=false (median) | fit, grad_time=true (median) | ratio, median (min-max) |")
    print("| --- | --- | --- | --- |")
    for r in report["results"]:
        print(f"| {r['cell']} | {r['off_median_s']:.2f} s | {r['on_median_s']:.2f} s | "
              f"{r['ratio_median']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) |")
    print(f"\nwritten: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
