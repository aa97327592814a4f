"""Start-up: what `python -m srn_lightning.train` costs beyond its fit and test, against the time to
import torch and lightning.

    python -m benchmarks.startup                 # 5 alternated pairs, a 1-epoch run
    python -m benchmarks.startup --repeats 7 trainer.max_epochs=5

Each pair runs, in fresh processes, `python -c "import os, torch, lightning; os._exit(0)"` (the
imports, without Python's shutdown) and the real command line
(`python -m srn_lightning.train <overrides>`, run through `benchmarks.timed_train`, which only times
Trainer.fit and Trainer.test). overhead = wall of the command - fit - test: interpreter, imports,
Hydra, config, the run's set-up and artifacts, exit. Results: outputs/benchmarks/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import OUT, child_env, environment, save_json, wall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(OUT / "startup.json"))
    parser.add_argument("overrides", nargs="*", default=["trainer.max_epochs=1"])
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="srn-startup-"))
    env = child_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    # os._exit: the import alone, not Python's shutdown with these modules loaded (1.3-1.7 s), which
    # the command skips (srn_lightning.console.exit_without_final_collection)
    imports = [sys.executable, "-c", "import os, torch, lightning; os._exit(0)"]
    train = [sys.executable, "-m", "benchmarks.timed_train", f"data.dir={work / 'data'}", *args.overrides]
    wall(train, work, {**env, "SRN_TIMES": str(work / "warm.json")})  # writes the data files once
    rows = []
    for i in range(args.repeats):
        times = work / f"times{i}.json"
        run_env = {**env, "SRN_TIMES": str(times)}
        # alternate which goes first, so drift on a shared machine hits both alike
        if i % 2:
            t_train, t_import = wall(train, work, run_env), wall(imports, work, env)
        else:
            t_import, t_train = wall(imports, work, env), wall(train, work, run_env)
        inner = json.loads(times.read_text())
        rows.append({"import_s": t_import, "command_s": t_train, **inner,
                     "overhead_s": t_train - inner["fit_s"] - inner["test_s"]})
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    beyond = [r["overhead_s"] - r["import_s"] for r in rows]
    report = {"benchmark": "startup", "overrides": args.overrides, **environment(), "runs": rows,
              "median": median, "overhead_beyond_imports_s": {
                  "median": statistics.median(beyond), "min": min(beyond), "max": max(beyond)}}
    out = save_json(args.out, report)
    print("| import torch, lightning | whole command | fit | test | command - fit - test | beyond the imports (min-max) |")
    print("| --- | --- | --- | --- | --- | --- |")
    b = report["overhead_beyond_imports_s"]
    print(f"| {median['import_s']:.2f} s | {median['command_s']:.2f} s | {median['fit_s']:.2f} s "
          f"| {median['test_s']:.2f} s | {median['overhead_s']:.2f} s "
          f"| {b['median']:.2f} s ({b['min']:.2f}-{b['max']:.2f}) |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
