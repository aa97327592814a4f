"""The TensorBoard writer's queue: the run with SummaryWriter's default against the run's own.

The project's run with the logger's `max_queue` at SummaryWriter's default (10 events) against the
run's own (1000, room for an epoch's scalars).

    python -m benchmarks.tensorboard_queue                 # the book's run, 7 pairs
    python -m benchmarks.tensorboard_queue --pairs 5 clip=norm

The run writes its per-step scalars (loss and eight grad norms, an event each) through the logger's
`log_metrics` once an epoch. A full queue makes `add_scalar` wait for the writer's thread. Fit time
only (`Trainer.fit`, as in benchmarks/parity.py), one warm-up pair, then pairs in alternating order.
Results: outputs/benchmarks/tensorboard_queue.json and a table on stdout.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
from pathlib import Path

from benchmarks.common import alternated, make_cfg, paired_setup, save_json, silenced
from benchmarks.grad_time import fit_seconds

DEFAULT_QUEUE = 10  # torch.utils.tensorboard.SummaryWriter's max_queue


@contextlib.contextmanager
def logger_queue(max_queue: int | None):
    """While active, every TensorBoardLogger the run builds gets `max_queue` (None: the run's own)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    init = TensorBoardLogger.__init__

    def with_queue(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "max_queue": max_queue})

    if max_queue is not None:
        TensorBoardLogger.__init__ = with_queue
    try:
        yield
    finally:
        TensorBoardLogger.__init__ = init


def bench(overrides: list[str], pairs: int, work: Path) -> dict:
    cfg = make_cfg(work / "data", *overrides)
    def fit(max_queue):
        def one(tag):
            with logger_queue(max_queue):
                return fit_seconds(cfg, work / tag)
        return one

    times = alternated({"default": fit(DEFAULT_QUEUE), "run": fit(None)}, pairs)
    saved = [a - b for a, b in zip(times["default"], times["run"])]
    return {"pairs": pairs, "default_queue_s": times["default"], "run_queue_s": times["run"],
            "default_median_s": statistics.median(times["default"]),
            "run_median_s": statistics.median(times["run"]),
            "saved_median_s": statistics.median(saved),
            "ratio_median": statistics.median(b / a for a, b in zip(times["default"], times["run"]))}


def main(argv=None) -> None:
    args, work, report = paired_setup("tensorboard_queue", __doc__, argv, pairs=7)
    with silenced():
        report["result"] = r = bench(args.overrides, args.pairs, work)
    save_json(args.out, report)
    print("| max_queue | fit (median) |\n| --- | --- |")
    print(f"| {DEFAULT_QUEUE} (SummaryWriter's default) | {r['default_median_s']:.3f} s |")
    print(f"| the run's | {r['run_median_s']:.3f} s |")
    print(f"\nsaved per fit, median of pairs: {r['saved_median_s']:.3f} s "
          f"(ratio {r['ratio_median']:.3f})")
    print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
