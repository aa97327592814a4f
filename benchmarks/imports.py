"""What an install's extras cost every process: the time to import torch, lightning and torchmetrics in
two Python environments, e.g. a default install against one with the search extra (SciPy, which
torchmetrics imports whenever it is installed).

    python -m benchmarks.imports /path/to/default/bin/python /path/to/search/bin/python

Alternated pairs of fresh processes running `import os, torch, lightning, torchmetrics; os._exit(0)`
(the imports, without Python's shutdown). Results: outputs/benchmarks/imports.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile

from benchmarks.common import OUT, environment, save_json, wall

CODE = "import os, sys, torch, lightning, torchmetrics; print('scipy' in sys.modules); os._exit(0)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.imports", description=__doc__.split("\n")[0])
    parser.add_argument("python_a", help="the first environment's python (e.g. the default install)")
    parser.add_argument("python_b", help="the second environment's python (e.g. with the search extra)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(OUT / "imports.json"))
    args = parser.parse_args(argv)
    cwd = tempfile.mkdtemp(prefix="srn-imports-")
    pythons = {"a": args.python_a, "b": args.python_b}
    scipy = {k: subprocess.run([py, "-c", CODE], capture_output=True, text=True, check=True).stdout.strip()
             for k, py in pythons.items()}
    rows = []
    for i in range(args.repeats):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")  # drift on a shared machine hits both alike
        rows.append({k: wall([pythons[k], "-c", CODE], cwd, None) for k in order})
    diff = [r["b"] - r["a"] for r in rows]
    report = {"benchmark": "imports", "python_a": args.python_a, "python_b": args.python_b,
              "scipy_imported": scipy, **environment(), "runs": rows,
              "a_median_s": statistics.median(r["a"] for r in rows),
              "b_median_s": statistics.median(r["b"] for r in rows),
              "b_minus_a": {"median": statistics.median(diff), "min": min(diff), "max": max(diff)}}
    out = save_json(args.out, report)
    print("| environment | imports SciPy | import torch, lightning, torchmetrics (median) |")
    print("| --- | --- | --- |")
    for k in ("a", "b"):
        print(f"| {pythons[k]} | {scipy[k]} | {report[f'{k}_median_s']:.2f} s |")
    d = report["b_minus_a"]
    print(f"\nsecond - first, median of {len(rows)} pairs: {d['median']:.2f} s ({d['min']:.2f} to {d['max']:.2f})")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
