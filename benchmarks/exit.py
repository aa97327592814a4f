"""Exit: how long a process that ran the project takes to end, with and without the exit handler
that skips Python's final garbage collection (`srn_lightning.console.exit_without_final_collection`).

    python -m benchmarks.exit                     # 5 alternated pairs

Each child process runs one short run in-process (`run()`, 1 epoch: torch, Lightning, TensorBoard
and matplotlib loaded), registers the handler or not, prints the time and returns; the parent
measures from that print to the child's end. Results: outputs/benchmarks/exit.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import OUT, REPO, child_env, environment, save_json


def child(work: Path, freeze: bool) -> None:
    from benchmarks.common import make_cfg, quiet
    from srn_lightning.console import exit_without_final_collection
    from srn_lightning.train import run

    quiet()
    cfg = make_cfg(work / "data", "trainer.max_epochs=1", "trainer.enable_progress_bar=false")
    run(cfg, Path(tempfile.mkdtemp(dir=work)))
    if freeze:
        exit_without_final_collection()
    print(time.time(), flush=True)


def exit_seconds(work: Path, freeze: bool) -> float:
    cmd = [sys.executable, "-m", "benchmarks.exit", "--child", "freeze" if freeze else "plain",
           "--work", str(work)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(OMP_NUM_THREADS="1"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    printed = float(proc.stdout.read().split()[-1])
    if proc.wait():
        raise RuntimeError(f"{' '.join(cmd)} failed")
    return time.time() - printed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exit",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(OUT / "exit.json"))
    parser.add_argument("--child", choices=("plain", "freeze"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.work), args.child == "freeze")
    work = Path(tempfile.mkdtemp(prefix="srn-exit-"))
    exit_seconds(work, True)  # warm-up: writes the data files, fills the OS caches
    rows = []
    for i in range(args.repeats):
        order = (False, True) if i % 2 == 0 else (True, False)
        row = {("with_handler_s" if f else "without_s"): exit_seconds(work, f) for f in order}
        rows.append(row)
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    report = {"benchmark": "exit", **environment(), "runs": rows, "median": median}
    out = save_json(args.out, report)
    print("| process exit after a run | without the handler | with it |")
    print("| --- | --- | --- |")
    print(f"| median of {len(rows)} (min-max) | {median['without_s']:.2f} s "
          f"({min(r['without_s'] for r in rows):.2f}-{max(r['without_s'] for r in rows):.2f}) "
          f"| {median['with_handler_s']:.2f} s ({min(r['with_handler_s'] for r in rows):.2f}-"
          f"{max(r['with_handler_s'] for r in rows):.2f}) |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
