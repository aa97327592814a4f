"""Length scaling: the cost of one training step (forward and backward) against the sequence length,
for every cell, with the per-position gradient record (`grad_time`) on and off.

    python -m benchmarks.length_scaling                              # L = 20, 100, 300, 1000, 3000
    python -m benchmarks.length_scaling --rounds 3 --lengths 100 1000 --cells srn

A step is what a training step of the project computes: the package's `SeqClassifier` at the book's
batch size (64) on random digits, cross-entropy summed over the batch, `backward()`; with the record
on, the cell keeps its states with their gradients retained and the project's `GradFlowMonitor`
takes its measurement (g_t at every position, sigma_max(U)), as it does before each optimizer step.
The points are interleaved: each round times every (cell, record, length) once, so a shared
machine's drift reaches every point alike; a point's figure is the median over the rounds, after a
warm-up round, in wall and in CPU time of the process (one torch thread: the step's own work, which
a busy machine's waits for a core leave out). Results: outputs/benchmarks/length_scaling.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import OUT, environment, save_json
from srn_lightning.callbacks import GradFlowMonitor
from srn_lightning.model import CELLS, SeqClassifier

BATCH = 64


class Point:
    """One (cell, record, length): a model, a batch, and a timed step."""

    def __init__(self, cell: str, record: bool, length: int) -> None:
        torch.manual_seed(0)
        self.model = SeqClassifier(10, 32, 32, 19, cell)
        self.x = torch.randint(0, 10, (BATCH, length))
        self.y = torch.randint(0, 19, (BATCH,))
        rnn = self.model.rnn_model
        self.flow = GradFlowMonitor(rnn, length) if record else None
        rnn.keep_states = record

    def step(self) -> tuple[float, float]:
        """(wall, CPU) seconds of one forward, loss, backward (and the monitor's measurement when on)."""
        self.model.zero_grad(set_to_none=True)
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(self.model(self.x), self.y, reduction="sum")
        loss.backward()
        if self.flow is not None:
            self.flow.on_before_optimizer_step(None, self.model, None)  # reads no trainer
        seconds = time.perf_counter() - start, time.process_time() - start_cpu
        self.model.rnn_model.states, self.model.rnn_model.cell_states = [], []
        return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.length_scaling",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[20, 100, 300, 1000, 3000])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds after the warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(OUT / "length_scaling.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keys = [(cell, record, n) for cell in args.cells for record in (False, True) for n in args.lengths]
    points = {k: Point(*k) for k in keys}
    times: dict = {k: [] for k in keys}
    for i in range(args.rounds + 1):  # round 0 is the warm-up
        for k in keys:
            seconds = points[k].step()
            if i > 0:
                times[k].append(seconds)
    results = []
    for cell, record, n in keys:
        wall, cpu = ([1e3 * t[i] for t in times[cell, record, n]] for i in (0, 1))
        results.append({"cell": cell, "grad_time": record, "length": n, "wall_median_ms": statistics.median(wall),
                        "cpu_median_ms": statistics.median(cpu), "wall_ms": wall, "cpu_ms": cpu})
    by_key = {(r["cell"], r["grad_time"], r["length"]): r for r in results}
    ratios = {}
    if {100, 1000} <= set(args.lengths):
        ratios = {f"{cell} grad_time={str(record).lower()}": {
            kind: by_key[cell, record, 1000][f"{kind}_median_ms"] / by_key[cell, record, 100][f"{kind}_median_ms"]
            for kind in ("wall", "cpu")} for cell in args.cells for record in (False, True)}
    report = {"benchmark": "length_scaling", "batch": BATCH, "threads": args.threads, "rounds": args.rounds,
              **environment(), "results": results, "ratio_1000_over_100": ratios}
    out = save_json(args.out, report)
    print("CPU ms (wall ms) of a step, median; the ratio of L=1000 to L=100 in CPU (wall) time\n")
    print("| cell | grad_time | " + " | ".join(f"L={n}" for n in args.lengths) + " | L=1000 / L=100 |")
    print("| --- | --- |" + " --- |" * (len(args.lengths) + 1))
    for cell in args.cells:
        for record in (False, True):
            name = f"{cell} grad_time={str(record).lower()}"
            cells = [f"{by_key[cell, record, n]['cpu_median_ms']:.1f} ({by_key[cell, record, n]['wall_median_ms']:.1f})"
                     for n in args.lengths]
            ratio = f"{ratios[name]['cpu']:.1f} ({ratios[name]['wall']:.1f})" if name in ratios else "-"
            print(f"| {cell} | {str(record).lower()} | " + " | ".join(cells) + f" | {ratio} |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
