"""Parity benchmark: the project's Lightning run against a plain PyTorch loop doing the same work.

    python -m benchmarks.parity                       # every clip mode, 7 timed pairs each
    python -m benchmarks.parity trainer.max_epochs=20 --modes none --pairs 5

The Lightning side is `srn_lightning.train.run` on the composed config, every feature on
(TensorBoard, grad_norms.csv, checkpoints, pre- and post-clip norms, the figure); the plain side is
`benchmarks/plain_loop.py`. Every pair is first checked for numerical parity (per-step losses and
grad norms, final weights); then the fit times (`Trainer.fit` against the plain loop, imports and
the test run excluded) are compared: one warm-up pair, then pairs whose order alternates, so drift
on a shared machine hits both sides alike. Peak memory is measured in fresh processes. Results go
to outputs/benchmarks/parity.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from benchmarks.common import OUT, REPO, child_env, environment, make_cfg, quiet, save_json, silenced
from benchmarks.plain_loop import device_of, fit_plain

MODES = ("none", "norm", "value", "norm_each")
NORMS = [f"{n}_{when}" for when in ("pre", "post") for n in ("W", "U", "b", "total")]


@contextlib.contextmanager
def timed_trainer_fit(times: list):
    """Times every `Trainer.fit` (wall and CPU) while active: the same span as run()'s fit_seconds."""
    from lightning.pytorch import Trainer

    fit = Trainer.fit

    def timed(self, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fit(self, *args, **kwargs)
        finally:
            times.append((time.perf_counter() - wall, time.process_time() - cpu))

    Trainer.fit = timed
    try:
        yield
    finally:
        Trainer.fit = fit


def lightning_fit(cfg, run_dir) -> dict:
    from lightning.pytorch import Callback

    from srn_lightning import record, train

    class FinalWeights(Callback):  # the weights at the end of fit, before test loads the best
        def on_fit_end(self, trainer, pl_module):
            self.state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}

    final, times = FinalWeights(), []
    draw, drawn = train.draw, []

    def timed_draw(*args, **kwargs):  # the figure's share of the run
        start = time.perf_counter()
        draw(*args, **kwargs)
        drawn.append(time.perf_counter() - start)

    train.draw = timed_draw
    try:
        with timed_trainer_fit(times):
            metrics = train.run(cfg, run_dir, callbacks=[final])
    finally:
        train.draw = draw
    rows = record.read_grad_norms(Path(run_dir) / record.CSV_NAME)
    f64 = torch.float64  # the CSV holds the float32 values exactly; compared as float64
    return {"losses": torch.tensor(rows["loss"], dtype=f64),
            "norms": torch.tensor([rows[c] for c in NORMS], dtype=f64).T,
            "state": final.state, "fit_seconds": times[0][0], "fit_cpu_seconds": times[0][1],
            "figure_seconds": sum(drawn), "dev_best": metrics["dev_best"]}


def plain_fit(cfg, run_dir) -> dict:
    out = fit_plain(cfg, run_dir)
    out["state"] = {k: v.detach().cpu() for k, v in out.pop("model").state_dict().items()}
    return out


def parity(light: dict, plain: dict) -> dict:
    """Largest differences; raises if per-step losses differ by more than 1e-5 (relative) or the
    norms or final weights are not close."""
    loss_diff = ((light["losses"] - plain["losses"].double()).abs() / plain["losses"].abs().clamp(min=1)).max()
    torch.testing.assert_close(light["losses"], plain["losses"].double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(light["norms"], plain["norms"].double(), rtol=1e-5, atol=1e-6)
    weight_diff = 0.0
    for k, v in plain["state"].items():
        torch.testing.assert_close(light["state"][k], v, rtol=1e-4, atol=1e-5)
        weight_diff = max(weight_diff, (light["state"][k] - v).abs().max().item())
    return {"loss_max_rel_diff": loss_diff.item(), "weight_max_abs_diff": weight_diff}


def bench_mode(mode: str, overrides: list[str], pairs: int, work: Path, memory: bool = True) -> dict:
    cfg = make_cfg(work / "data", f"clip={mode}", *overrides)
    sides = {"plain": plain_fit, "lightning": lightning_fit}
    times = {"plain": [], "lightning": []}
    diffs = []
    for i in range(pairs + 1):  # pair 0 is the warm-up: imports, first-call caches, lazy modules
        order = ("plain", "lightning") if i % 2 == 0 else ("lightning", "plain")
        out = {side: sides[side](cfg, work / f"{mode}-{i}-{side}") for side in order}
        diffs.append(parity(out["lightning"], out["plain"]))
        if i > 0:
            for side in sides:
                times[side].append((out[side]["fit_seconds"], out[side]["fit_cpu_seconds"]))
    wall = {s: [t[0] for t in times[s]] for s in sides}
    cpu = {s: [t[1] for t in times[s]] for s in sides}
    ratios = [light / plain for light, plain in zip(wall["lightning"], wall["plain"])]
    cpu_ratios = [light / plain for light, plain in zip(cpu["lightning"], cpu["plain"])]
    return {
        "mode": mode,
        "pairs": pairs,
        "steps": len(out["plain"]["losses"]),
        "plain_wall_s": wall["plain"],
        "lightning_wall_s": wall["lightning"],
        "plain_cpu_s": cpu["plain"],
        "lightning_cpu_s": cpu["lightning"],
        "plain_median_s": statistics.median(wall["plain"]),
        "lightning_median_s": statistics.median(wall["lightning"]),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "parity": {k: max(d[k] for d in diffs) for k in diffs[0]},
        "memory": {side: memory_probe(side, mode, overrides, work) for side in sides} if memory else None,
    }


def memory_probe(side: str, mode: str, overrides: list[str], work: Path) -> dict:
    """Peak memory of one fit, in a fresh process (see `probe`)."""
    cmd = [sys.executable, "-m", "benchmarks.parity", *overrides, "--probe", side,
           "--work", str(work), "--modes", mode]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=child_env())
    if proc.returncode:
        raise RuntimeError(f"memory probe failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss_mb() -> tuple[float, float]:
    """(resident now, peak resident) of this process, in MB (Linux /proc)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return tuple(int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def probe(side: str, mode: str, overrides: list[str], work: Path, stdout) -> None:
    """Prints {peak RSS above the RSS before the fit, peak of Python allocations in a second fit,
    and on CUDA the peak of torch's CUDA allocations in the first}. On CUDA the context is created
    before the RSS baseline is read: the growth is what the fit brings in beyond it (cuBLAS, the
    kernels loaded on first use, the allocator's pool).
    The first counts everything a fit brings in (lazy imports, tensors, buffers): the kernel's
    peak-RSS mark is reset right before it. The second, with imports done, is what tracemalloc
    sees: Python objects and numpy buffers, not torch's own CPU allocator."""
    # Both sides' baseline with torch and Lightning imported, as a run's process has them before its fit
    import lightning.pytorch  # noqa: F401

    cfg = make_cfg(work / "data", f"clip={mode}", *overrides)
    fit = {"plain": plain_fit, "lightning": lightning_fit}[side]
    cuda = device_of(cfg).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before, _ = rss_mb()
    fit(cfg, work / f"probe-{side}-{mode}-1")
    _, peak = rss_mb()
    gpu = {"cuda_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20} if cuda else {}
    tracemalloc.start()
    fit(cfg, work / f"probe-{side}-{mode}-2")
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    result = {"rss_before_mb": before, "peak_rss_growth_mb": peak - before,
              "tracemalloc_peak_mb": traced / 2**20, **gpu}
    print(json.dumps(result), file=stdout)


def table(results: list[dict]) -> str:
    cuda = any(r["memory"] and "cuda_peak_allocated_mb" in r["memory"]["plain"] for r in results)
    header = ["clip", "steps", "plain fit s (median)", "Lightning fit s (median)", "ratio median",
              "ratio min-max", "CPU-time ratio", "max loss diff",
              "peak RSS growth MB plain / Lightning", "tracemalloc peak MB plain / Lightning"]
    keys = ["peak_rss_growth_mb", "tracemalloc_peak_mb"]
    if cuda:
        header.append("CUDA peak allocated MB plain / Lightning")
        keys.append("cuda_peak_allocated_mb")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in results:
        m = r["memory"] or {s: {} for s in ("plain", "lightning")}
        cells = [r["mode"], str(r["steps"]), f"{r['plain_median_s']:.3f}",
                 f"{r['lightning_median_s']:.3f}", f"{r['ratio_median']:.2f}",
                 f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}",
                 f"{r['cpu_ratio_median']:.2f}", f"{r['parity']['loss_max_rel_diff']:.1e}"]
        nan = float("nan")
        cells += [f"{m['plain'].get(k, nan):.1f} / {m['lightning'].get(k, nan):.1f}" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parity", description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--pairs", type=int, default=7, help="timed pairs after the warm-up (>= 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default 1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--out", default=str(OUT / "parity.json"))
    parser.add_argument("--probe", choices=("plain", "lightning"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides for both sides, key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet()
    work = Path(args.work or tempfile.mkdtemp(prefix="srn-parity-"))
    # the progress bar and banners go to /dev/null here, so a terminal's speed is not measured
    with silenced():
        if args.probe:
            return probe(args.probe, args.modes[0], args.overrides, work, sys.__stdout__)
        report = {"benchmark": "parity", "overrides": args.overrides, "threads": args.threads,
                  **environment(device_of(make_cfg(work / "data", *args.overrides))), "results": []}
        out = Path(args.out)
        for mode in args.modes:  # the JSON is rewritten after each mode: a cut-short run keeps its figures
            report["results"].append(bench_mode(mode, args.overrides, args.pairs, work, not args.no_memory))
            save_json(out, report)
            print(f"clip={mode}: ratio {report['results'][-1]['ratio_median']:.2f}", file=sys.__stderr__,
                  flush=True)
    results = report["results"]
    print(table(results))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
