"""Scaling: fit time of one run against sequence length and hidden size, Lightning and plain, so the
cost of a sweep can be predicted.

    python -m benchmarks.scaling                  # lengths 5..35 at hidden 32, hidden 32..256 at length 20
    python -m benchmarks.scaling --pairs 5 --lengths 5 20 35 --hidden 32 256

Each point is the book's run (50 epochs, clip=none) with one key changed, timed as in
benchmarks/parity.py: a warm-up pair, then alternated pairs, parity checked on each. Results:
outputs/benchmarks/scaling.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import OUT, environment, make_cfg, quiet, save_json, silenced
from benchmarks.parity import lightning_fit, parity, plain_fit
from benchmarks.plain_loop import device_of


def point(overrides: list[str], pairs: int, work: Path) -> dict:
    cfg = make_cfg(work / "data", *overrides)
    times = {"plain": [], "lightning": []}
    for i in range(pairs + 1):
        order = ("plain", "lightning") if i % 2 == 0 else ("lightning", "plain")
        out = {s: (plain_fit if s == "plain" else lightning_fit)(cfg, work / f"{i}-{s}") for s in order}
        parity(out["lightning"], out["plain"])
        if i > 0:
            for s in times:
                times[s].append(out[s]["fit_seconds"])
    plain, light = statistics.median(times["plain"]), statistics.median(times["lightning"])
    return {"overrides": overrides, "plain_s": plain, "lightning_s": light, "ratio": light / plain,
            "plain_all_s": times["plain"], "lightning_all_s": times["lightning"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[5, 10, 20, 35])
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(OUT / "scaling.json"))
    parser.add_argument("overrides", nargs="*", help="added to every point, key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet()
    work = Path(tempfile.mkdtemp(prefix="srn-scaling-"))
    grid = [[f"length={n}"] for n in args.lengths]
    grid += [[f"model.hidden_size={h}"] for h in args.hidden if h != 32 or 20 not in args.lengths]
    results = []
    with silenced():
        for i, overrides in enumerate(grid):
            results.append(point([*overrides, *args.overrides], args.pairs, work / str(i)))
            r = results[-1]
            print(f"{overrides}: plain {r['plain_s']:.2f} s, Lightning {r['lightning_s']:.2f} s",
                  file=sys.__stderr__, flush=True)
    device = device_of(make_cfg(work / "data", *args.overrides))
    report = {"benchmark": "scaling", "overrides": args.overrides, "threads": args.threads,
              **environment(device), "results": results}
    out = save_json(args.out, report)
    print("| length | hidden | plain fit s | Lightning fit s | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        keys = dict(o.split("=") for o in r["overrides"])
        print(f"| {keys.get('length', 20)} | {keys.get('model.hidden_size', 32)} | {r['plain_s']:.2f} "
              f"| {r['lightning_s']:.2f} | {r['ratio']:.2f} |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
