"""What the dashboard views cost: the run with its per-step TensorBoard scalars only, against the run
with the pre-clip norms also as log10 and as their peak so far (callbacks.RowWriter's
`log10_tags` and `peak_tags`: four more scalars a step, and the four peaks where they rise and at
each epoch's end).

    python -m benchmarks.dashboard_views                 # the book's run, 7 pairs
    python -m benchmarks.dashboard_views --pairs 5 clip=norm

Fit time only (`Trainer.fit`, as in benchmarks/parity.py), one warm-up pair, then pairs in
alternating order; and, apart from any training, the logging alone: the 250 rows of the book's run
through a RowWriter into a TensorBoardLogger, plain and with the views, median of 7 rounds each.
Results: outputs/benchmarks/dashboard_views.json and a table on stdout.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
from pathlib import Path

from benchmarks.common import alternated, make_cfg, paired_setup, save_json, silenced
from benchmarks.grad_time import fit_seconds


@contextlib.contextmanager
def without_views():
    """While active, every RowWriter the run builds logs its plain tags only."""
    from srn_lightning.callbacks import RowWriter

    init = RowWriter.__init__

    def plain(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.log10_tags, self.peak_tags = [], []

    RowWriter.__init__ = plain
    try:
        yield
    finally:
        RowWriter.__init__ = init


def logging_seconds(views: bool, work: Path, steps: int = 250, rounds: int = 7) -> dict:
    """Median seconds to log `steps` grad-norm rows through a RowWriter into a TensorBoardLogger
    (the run's, with its queue), the views on or off: until the events are queued (the training
    thread's share) and until the writer is closed (the events on disk)."""
    import time
    from types import SimpleNamespace

    from lightning.pytorch.loggers import TensorBoardLogger

    from srn_lightning.callbacks import RowWriter
    from srn_lightning.record import COLUMNS

    rows = [[i, i // 5, *(float(i % 7) + 0.5 for _ in COLUMNS[2:])] for i in range(steps)]
    names = ["W", "U", "b", "total"]
    tags = {"loss": "train/loss"} | {f"{n}_{w}": f"grad_norm_{w}/{n}" for w in ("pre", "post") for n in names}
    seconds = []
    for r in range(rounds):
        monitor = SimpleNamespace(columns=COLUMNS, rows=lambda start=0: rows[start:])
        views = {"log10_tags": {f"{n}_pre": f"grad_norm_pre_log10/{n}" for n in names},
                 "peak_tags": {f"{n}_pre": f"grad_norm_pre_peak/{n}" for n in names}} if views else {}
        out = work / f"log-{'views' if views else 'plain'}-{r}"
        out.mkdir(parents=True)
        writer = RowWriter(monitor, out / "rows.csv", tags, **views)
        logger = TensorBoardLogger(out, name="tb", version="", max_queue=1000)
        trainer = SimpleNamespace(loggers=[logger])
        start = time.perf_counter()
        writer.flush(trainer)  # what the training thread spends: the events queued
        queued = time.perf_counter()
        logger.finalize("success")  # and the writer's thread writing them
        seconds.append((queued - start, time.perf_counter() - start))
    return {"queued_s": statistics.median(q for q, _ in seconds), "written_s": statistics.median(w for _, w in seconds)}


def bench(overrides: list[str], pairs: int, work: Path) -> dict:
    cfg = make_cfg(work / "data", *overrides)

    def fit(views: bool):
        def one(tag):
            with contextlib.nullcontext() if views else without_views():
                return fit_seconds(cfg, work / tag)
        return one

    times = alternated({"plain": fit(False), "views": fit(True)}, pairs)
    cost = [b - a for a, b in zip(times["plain"], times["views"])]
    return {"pairs": pairs, "plain_s": times["plain"], "views_s": times["views"],
            "plain_median_s": statistics.median(times["plain"]),
            "views_median_s": statistics.median(times["views"]),
            "cost_median_s": statistics.median(cost),
            "ratio_median": statistics.median(b / a for a, b in zip(times["plain"], times["views"])),
            "logging_plain_s": logging_seconds(False, work), "logging_views_s": logging_seconds(True, work)}


def main(argv=None) -> None:
    args, work, report = paired_setup("dashboard_views", __doc__, argv, pairs=7)
    with silenced():
        report["result"] = r = bench(args.overrides, args.pairs, work)
    save_json(args.out, report)
    print("| per-step TensorBoard scalars | fit (median) |\n| --- | --- |")
    print(f"| loss and the eight norms | {r['plain_median_s']:.3f} s |")
    print(f"| and the pre-clip norms as log10 and their peaks | {r['views_median_s']:.3f} s |")
    print(f"\ncost per fit, median of pairs: {r['cost_median_s']:.3f} s (ratio {r['ratio_median']:.3f})")
    for name in ("plain", "views"):
        t = r[f"logging_{name}_s"]
        print(f"logging the 250 rows alone, {name}: {t['queued_s']:.3f} s queued, {t['written_s']:.3f} s written")
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
