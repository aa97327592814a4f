"""The parity benchmark's fit ratio of two checkouts of the project, measured side by side.

    git worktree add /tmp/srn-before <commit>
    python -m benchmarks.compare_trees /tmp/srn-before          # this checkout against that one
    python -m benchmarks.compare_trees /tmp/srn-before --modes none norm --rounds 20
    python -m benchmarks.compare_trees /tmp/srn-before --this grad_time=false trainer.max_epochs=20

A worker process per checkout imports that checkout's `benchmarks.parity` and runs one fit at a
time on request: the Lightning run (`lightning_fit`) or the plain loop (`plain_fit`), on the same
data. Each round runs the four fits (two checkouts x two sides) once each, in an order that rotates
from round to round, so the drift of a shared machine reaches every fit alike within seconds; one
warm-up round first. A fit's ratio is Lightning over plain of the same checkout and round. Results:
outputs/benchmarks/compare_trees.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import OUT, REPO, environment, save_json

# Runs in the worker, in the checkout it measures: a line "mode side run_dir overrides..." in, a line
# with the fit's wall seconds out, on a copy of stdout; the process's own stdout goes to /dev/null,
# so nothing a fit prints can get into the replies.
WORKER = r"""
import json, os, sys
reply = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
sys.path.insert(0, os.getcwd())
import torch
torch.set_num_threads(1)
from benchmarks.common import make_cfg, quiet
from benchmarks.parity import lightning_fit, plain_fit
quiet()
data = sys.argv[1]
for line in sys.stdin:
    mode, side, run_dir, *overrides = line.split()
    cfg = make_cfg(data, f"clip={mode}", *overrides)
    result = (lightning_fit if side == "lightning" else plain_fit)(cfg, run_dir)
    print(json.dumps(result["fit_seconds"]), file=reply, flush=True)
"""


class Worker:
    """A process in `checkout` that runs one fit per request."""

    def __init__(self, checkout: Path, data: Path, overrides: list[str]) -> None:
        self.checkout, self.overrides = checkout, overrides  # its own overrides, after the shared ones
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(data)], cwd=checkout,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)

    def fit(self, mode: str, side: str, run_dir: Path, overrides: list[str]) -> float:
        self.proc.stdin.write(" ".join([mode, side, str(run_dir), *overrides, *self.overrides]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker in {self.checkout} ended (exit {self.proc.wait()}); "
                               f"try the fit there: python -m benchmarks.parity --modes {mode}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def describe(checkout: Path) -> dict:
    """The checkout's path, commit and whether it has changes beyond it (None outside git)."""
    def git(*args):
        proc = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {"path": str(checkout), "commit": commit,
            "changed": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def bench_mode(workers: dict, mode: str, rounds: int, overrides: list[str], work: Path) -> dict:
    fits = [(tree, side) for tree in workers for side in ("lightning", "plain")]
    seconds: dict = {fit: [] for fit in fits}
    for i in range(rounds + 1):  # round 0 is the warm-up
        order = fits[i % len(fits):] + fits[:i % len(fits)]
        for tree, side in order:
            s = workers[tree].fit(mode, side, work / f"{mode}-{i}-{tree}-{side}", overrides)
            if i > 0:
                seconds[tree, side].append(s)
    result = {"mode": mode, "rounds": rounds}
    for tree in workers:
        light, plain = seconds[tree, "lightning"], seconds[tree, "plain"]
        ratios = [a / b for a, b in zip(light, plain)]
        result[tree] = {"lightning_s": light, "plain_s": plain, "ratios": ratios,
                        "lightning_median_s": statistics.median(light),
                        "plain_median_s": statistics.median(plain),
                        "ratio_median": statistics.median(ratios)}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_trees",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("other", help="the other checkout (its root)")
    parser.add_argument("--modes", nargs="+", default=["none", "norm", "value", "norm_each"])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--this", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for this checkout only (a key the other one does not have)")
    parser.add_argument("--out", default=str(OUT / "compare_trees.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides for every fit, key=value")
    args = parser.parse_intermixed_args(argv)
    work = Path(tempfile.mkdtemp(prefix="srn-compare-"))
    trees = {"other": Path(args.other).resolve(), "this": REPO}
    workers = {"other": Worker(trees["other"], work / "data", []),
               "this": Worker(trees["this"], work / "data", args.this)}
    report = {"benchmark": "compare_trees", "trees": {k: describe(v) for k, v in trees.items()},
              "overrides": args.overrides, "this_overrides": args.this, **environment(), "results": []}
    try:
        for mode in args.modes:
            report["results"].append(bench_mode(workers, mode, args.rounds, args.overrides, work))
            save_json(args.out, report)
    finally:
        for w in workers.values():
            w.close()
    print("| clip | other: Lightning / plain (median) | ratio | this: Lightning / plain (median) | ratio | change |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in report["results"]:
        o, t = r["other"], r["this"]
        print(f"| {r['mode']} | {o['lightning_median_s']:.2f} / {o['plain_median_s']:.2f} s | "
              f"{o['ratio_median']:.2f} | {t['lightning_median_s']:.2f} / {t['plain_median_s']:.2f} s | "
              f"{t['ratio_median']:.2f} | {t['ratio_median'] - o['ratio_median']:+.2f} |")
    print(f"\nwritten: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
