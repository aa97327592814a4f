"""The floor: what Lightning costs with nothing of the project attached, against the plain loop and
the project's run.

    python -m benchmarks.floor                    # 5 rounds after a warm-up
    python -m benchmarks.floor --rounds 7 trainer.max_epochs=20

Variants, each one fit of the book's run (clip=none): the plain loop; a bare Trainer (no logger,
no checkpointing, no progress bar, no project callbacks) without validation; the same with
validation every epoch; the project's run (srn_lightning.train.run, every feature on). Rounds run
the variants in rotated order. Results: outputs/benchmarks/floor.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import OUT, environment, make_cfg, quiet, save_json, silenced
from benchmarks.parity import lightning_fit, plain_fit


def bare_fit(cfg, run_dir, validate: bool) -> dict:
    from lightning.pytorch import Trainer, seed_everything

    from srn_lightning.datamodule import DigitSumDataModule
    from srn_lightning.module import SRNClassifier

    seed_everything(cfg.seed, workers=True, verbose=False)
    data = DigitSumDataModule(cfg.data.dir, cfg.length, cfg.batch_size, cfg.seed)
    module = SRNClassifier(cfg.model.input_size, cfg.model.hidden_size, cfg.lr)
    trainer = Trainer(
        max_epochs=cfg.trainer.max_epochs, accelerator="cpu", devices=1, deterministic=True,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=run_dir,
        limit_val_batches=None if validate else 0, num_sanity_val_steps=None if validate else 0,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=data)
    return {"fit_seconds": time.perf_counter() - wall, "fit_cpu_seconds": time.process_time() - cpu}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(OUT / "floor.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet()
    work = Path(tempfile.mkdtemp(prefix="srn-floor-"))
    cfg = make_cfg(work / "data", *args.overrides)
    variants = {
        "plain loop": lambda d: plain_fit(cfg, d),
        "bare Lightning, no validation": lambda d: bare_fit(cfg, d, validate=False),
        "bare Lightning, validation every epoch": lambda d: bare_fit(cfg, d, validate=True),
        "project run, every feature on": lambda d: lightning_fit(cfg, d),
    }
    names = list(variants)
    times = {n: [] for n in names}
    with silenced():
        for i in range(args.rounds + 1):  # round 0 warms up
            for n in names[i % len(names):] + names[: i % len(names)]:
                out = variants[n](work / f"{i}-{names.index(n)}")
                if i > 0:
                    times[n].append((out["fit_seconds"], out["fit_cpu_seconds"], out.get("figure_seconds")))
    plain = statistics.median(t[0] for t in times[names[0]])
    plain_cpu = statistics.median(t[1] for t in times[names[0]])
    rows = [{"variant": n, "wall_s": statistics.median(t[0] for t in times[n]),
             "cpu_s": statistics.median(t[1] for t in times[n]), "all": times[n]} for n in names]
    for r in rows:
        r["ratio"], r["cpu_ratio"] = r["wall_s"] / plain, r["cpu_s"] / plain_cpu
    project = rows[-1]
    project["figure_s"] = statistics.median(t[2] for t in times[names[-1]])
    out = save_json(args.out, {"benchmark": "floor", "overrides": args.overrides,
                               "threads": args.threads, **environment(), "results": rows})
    print("| fit of the book's run | wall s (median) | / plain | CPU s | / plain |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['wall_s']:.2f} | {r['ratio']:.2f} | {r['cpu_s']:.2f} | {r['cpu_ratio']:.2f} |")
    print(f"\nof the project run's fit, drawing the figure (PNG, PDF, TensorBoard image): "
          f"{project['figure_s']:.2f} s (median)")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
