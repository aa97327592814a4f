"""The memory experiment's job against a plain PyTorch loop: `experiment=memory` (Adam, lr 0.001,
mean loss, batch 8, the best-on-dev checkpoint) at length 35, for each cell, the project's fit with
the record it keeps by default against `benchmarks/plain_loop.py` training and validating the same
model the same way.

    python -m benchmarks.memory_job                          # srn and lstm, 30 epochs, 5 pairs
    python -m benchmarks.memory_job --cells srn --pairs 3 record_every=1

Both sides as in benchmarks/parity.py (the fit alone: `Trainer.fit` against the plain loop; every
pair checked for the same per-step losses and grad norms and the same final weights), alternated
pair by pair after a warm-up pair (`common.alternated`). The project's side runs as a job whose
output goes to a file does (no progress bar). Results: outputs/benchmarks/memory_job.json and a table.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from benchmarks.common import alternated, make_cfg, paired_setup, save_json, silenced
from benchmarks.parity import lightning_fit, parity, plain_fit


def bench_cell(cell: str, overrides: list[str], pairs: int, work: Path) -> dict:
    cfg = make_cfg(work / "data", "experiment=memory", f"model={cell}", "length=35",
                   "trainer.max_epochs=30", "trainer.enable_progress_bar=false", *overrides)
    fits = {"plain": plain_fit, "lightning": lightning_fit}
    done, cpu, diffs, steps = {}, {name: [] for name in fits}, [], []

    def side(name: str):
        def fit(tag: str) -> float:  # tag: "<pair>-<side>", pair 0 the warm-up
            done[name] = fits[name](cfg, work / f"{cell}-{tag}")
            if not tag.startswith("0-"):
                cpu[name].append(done[name]["fit_cpu_seconds"])
            seconds = done[name]["fit_seconds"]
            if len(done) == 2:  # both sides of the pair ran: the same training, step by step
                steps.append(len(done["plain"]["losses"]))
                diffs.append(parity(done.pop("lightning"), done.pop("plain")))
            return seconds
        return fit

    wall = alternated({name: side(name) for name in fits}, pairs)
    ratios = [b / a for a, b in zip(wall["plain"], wall["lightning"])]
    cpu_ratios = [b / a for a, b in zip(cpu["plain"], cpu["lightning"])]
    return {
        "cell": cell, "overrides": overrides, "pairs": pairs, "steps": steps[0],
        "plain_wall_s": wall["plain"], "lightning_wall_s": wall["lightning"],
        "plain_cpu_s": cpu["plain"], "lightning_cpu_s": cpu["lightning"],
        "plain_median_s": statistics.median(wall["plain"]),
        "lightning_median_s": statistics.median(wall["lightning"]),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "parity": {k: max(d[k] for d in diffs) for k in diffs[0]},
    }


def main(argv=None) -> None:
    args, work, report = paired_setup("memory_job", __doc__, argv, pairs=5, cells=["srn", "lstm"])
    report["results"] = []
    with silenced():
        for cell in args.cells:  # the JSON is rewritten after each cell
            report["results"].append(bench_cell(cell, args.overrides, args.pairs, work))
            save_json(args.out, report)
            r = report["results"][-1]
            print(f"{cell}: ratio {r['ratio_median']:.2f}, CPU {r['cpu_ratio_median']:.2f}",
                  file=sys.__stderr__, flush=True)
    print("| cell | steps | plain fit (median) | project fit (median) | ratio, median (min-max) | CPU-time ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in report["results"]:
        print(f"| {r['cell']} | {r['steps']} | {r['plain_median_s']:.2f} s | {r['lightning_median_s']:.2f} s "
              f"| {r['ratio_median']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | {r['cpu_ratio_median']:.2f} |")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
