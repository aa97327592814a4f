"""The CPU time of an optimizer step in the project's fit: five seeds trained side by side (one
stacked model, srn_lightning/stacked.py, every seed's record kept) against one seed's own run,
in alternated pairs of fits.

    python -m benchmarks.stacked_step                        # the memory experiment, 10 epochs a fit
    python -m benchmarks.stacked_step --pairs 5 length=35

CPU time (`time.process_time`) of `train.fit`: the Trainer's loop, validation, checkpoints and the
records, one torch thread; a shared machine's load changes wall time far more than CPU time.
Results: outputs/benchmarks/stacked_step.json.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.common import alternated, make_cfg, paired_setup, save_json, silenced

SEEDS = 5
SETTINGS = {"srn": ["model=srn", "length=20"], "lstm": ["model=lstm", "length=35"]}


def main(argv=None) -> None:
    from srn_lightning import stacked, train

    args, work, report = paired_setup("stacked_step", __doc__, argv, pairs=3, cells=list(SETTINGS))
    rows = []
    for cell in args.cells:
        overrides = ["experiment=memory", "trainer.max_epochs=10", "trainer.enable_progress_bar=false",
                     *SETTINGS[cell], *args.overrides]

        def cfg(seed):
            return make_cfg(work / "data", *overrides, f"seed={seed}")

        def group(tag):
            g = stacked.build([(cfg(s), work / tag / str(s)) for s in range(SEEDS)])
            g.datamodule.prepare_data()
            start = time.process_time()
            train.fit(train.Built(g.trainer, g.module, g.datamodule, [], None), None)
            return (time.process_time() - start) / g.trainer.global_step

        def alone(tag):
            b = train.build(cfg(0), work / tag)
            b.datamodule.prepare_data()
            start = time.process_time()
            train.fit(b, None)
            return (time.process_time() - start) / b.trainer.global_step

        with silenced():
            times = alternated({"stacked": group, "alone": alone}, args.pairs)
        stacked_ms = 1e3 * statistics.median(times["stacked"])
        alone_ms = 1e3 * statistics.median(times["alone"])
        rows.append({"cell": cell, "overrides": overrides, "times_s": times, "stacked_ms": stacked_ms,
                     "alone_ms": alone_ms, "speedup": SEEDS * alone_ms / stacked_ms})
    report["rows"] = rows
    out = save_json(args.out, report)
    print(f"| setting | a step of {SEEDS} seeds side by side | a step of one seed alone | {SEEDS} seeds alone / side by side |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {' '.join(r['overrides'][:1] + SETTINGS[r['cell']])} | {r['stacked_ms']:.2f} ms | "
              f"{r['alone_ms']:.2f} ms | {r['speedup']:.2f}x |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
