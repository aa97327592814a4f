"""The cost of the stop points: a training step's forward and backward pass with the model's
stop points (interrupts.stop_point at every STOP_EVERY-th position, and its backward hook there)
against the same step without.

    python -m benchmarks.stop_points                      # lengths 20 (the book's) and 200, 7 pairs
    python -m benchmarks.stop_points --lengths 20 --pairs 9

One pass = `model(digits)` and `backward()` of the summed logits on a batch of 64, with the hidden
states kept (grad_time on, the default). Each timed pair is the median of 50 passes a side, the
sides alternating pair by pair after a warm-up pair. Results: outputs/benchmarks/stop_points.json
and a table on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import OUT, alternated, environment, save_json
from srn_lightning import interrupts
from srn_lightning.model import SeqClassifier

PASSES = 50


def step_seconds(length: int, stop_point) -> float:
    """The median seconds of PASSES forward and backward passes at `length`."""
    torch.manual_seed(0)
    model = SeqClassifier()
    model.rnn_model.keep_states = True
    model.rnn_model.stop_point = stop_point
    digits = torch.randint(0, 10, (64, length))
    times = []
    for _ in range(PASSES):
        start = time.perf_counter()
        model(digits).sum().backward()
        times.append(time.perf_counter() - start)
        model.zero_grad()
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stop_points")
    parser.add_argument("--lengths", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with interrupts.Phases() as phases:
        phases.enter("fit")
        for length in args.lengths:
            times = alternated({"without": lambda tag: step_seconds(length, None),
                                "with": lambda tag: step_seconds(length, interrupts.stop_point)},
                               args.pairs)
            without, with_ = (statistics.median(times[k]) for k in ("without", "with"))
            rows.append({"length": length, "without_ms": without * 1e3, "with_ms": with_ * 1e3,
                         "ratio": with_ / without, "pairs": times})
    path = save_json(OUT / "stop_points.json", {"environment": environment(), "passes": PASSES, "rows": rows})
    print("| length | without (median ms) | with (median ms) | ratio |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['length']} | {r['without_ms']:.2f} | {r['with_ms']:.2f} | {r['ratio']:.3f} |")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
