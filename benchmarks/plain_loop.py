"""The book's run as a hand-written PyTorch loop: the yardstick the Lightning path is measured against.

It does the same work as `srn_lightning.train.run` minus the framework: the same model (the package's
SeqClassifier, the config's cell and optimizer) with the same init (same seed, same construction
order), the same seeded batch order (the loaders the DataModule serves, srn_lightning/data.py), the
same clip mode with the same semantics, the same per-step pre- and post-clip grad-norm records,
validation every epoch and best-on-dev / last checkpoint files. It imports torch, numpy and the
package's modules that need no Lightning (data, model, clipping), not Lightning.

    python -m benchmarks.plain_loop RUN_DIR CONFIG_JSON [CONFIG_JSON ...]

fits each run's resolved config (JSON; its `seed` names its dir under RUN_DIR) one after the other
with one torch thread, as a user's script would: benchmarks/seeds.py's yardstick.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from torch.nn.utils import get_total_norm

from srn_lightning import data
from srn_lightning.clipping import clip_gradients_
from srn_lightning.model import SeqClassifier


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}  # the config's optimizer.name


def step_norms(model) -> torch.Tensor:
    """[W, U, b, total] L2 gradient norms, no host sync."""
    rnn = model.rnn_model
    tracked = [torch.linalg.vector_norm(p.grad) for p in (rnn.W, rnn.U, rnn.b)]
    return torch.stack([*tracked, get_total_norm([p.grad for p in model.parameters()])])


@torch.no_grad()
def evaluate(model, loader, device) -> tuple[float, float]:
    """(accuracy, mean per-example loss) over a loader."""
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        correct += (logits.argmax(-1) == y).sum()
        loss += F.cross_entropy(logits, y, reduction="sum")
        n += len(y)
    model.train()
    return float(correct) / n, float(loss) / n


def seed_all(seed: int) -> None:
    """Python's, numpy's and torch's generators seeded, as Lightning's `seed_everything` seeds them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save(path: Path, model, optimizer, epoch: int, step: int) -> None:
    torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "global_step": step}, path)


def device_of(cfg) -> torch.device:
    """The device the Trainer puts the run on: `trainer.accelerator` cpu, gpu/cuda, or auto."""
    accelerator = cfg.trainer.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("cpu")


def fit_plain(cfg, run_dir, device: torch.device | str | None = None) -> dict:
    """Train as `run(cfg, run_dir)` does (fit only, no test), on `device` (default: the config's
    accelerator). Returns per-step `losses` [steps], `norms` [steps, 8] (W, U, b, total pre-clip,
    then post-clip), `model`, `dev_best`, and the wall and CPU seconds of the fit: data set-up,
    training, validation, checkpoints, the norms' CSV."""
    device = torch.device(device) if device is not None else device_of(cfg)
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    deterministic = bool(cfg.trainer.get("deterministic", False))
    if deterministic:  # as the Trainer does: deterministic cuBLAS needs a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    seed_all(cfg.seed)
    # same construction order as SRNClassifier, so the same seed draws the same weights
    model = SeqClassifier(10, cfg.model.input_size, cfg.model.hidden_size, 19, cfg.model.cell).to(device)
    optimizer = OPTIMIZERS[cfg.optimizer.name](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    start, start_cpu = time.perf_counter(), time.process_time()
    data.ensure_files(cfg.data.dir, cfg.length, cfg.data.regenerate)
    train = data.loader(data.dataset(cfg.data.dir, cfg.length, "train"), "train", cfg.batch_size, cfg.length,
                        torch.Generator().manual_seed(cfg.seed), cfg.data.num_workers)
    dev = data.loader(data.dataset(cfg.data.dir, cfg.length, "dev"), "dev", cfg.batch_size, cfg.length,
                      num_workers=cfg.data.num_workers)
    rows, losses, best, best_path, step = [], [], -1.0, None, 0
    for epoch in range(cfg.trainer.max_epochs):
        for x, y in train:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y, reduction=cfg.reduction)
            optimizer.zero_grad()
            loss.backward()
            pre = step_norms(model)
            clip_gradients_(model.parameters(), cfg.clip.mode, cfg.clip.val)
            rows.append(torch.cat([pre, step_norms(model)]))
            losses.append(loss.detach())
            optimizer.step()
            step += 1
            with torch.no_grad():  # the same per-step NaN/Inf check as the project's monitor
                weights = get_total_norm(list(model.parameters()))
            if not torch.isfinite(torch.cat([losses[-1].reshape(1), rows[-1], weights.reshape(1)])).all():
                raise FloatingPointError(f"diverged at step {step - 1}")
        acc, _ = evaluate(model, dev, device)
        if acc > best:  # strictly better: the first epoch to reach the best is kept
            if best_path is not None:
                best_path.unlink()
            best, best_path = acc, run_dir / "checkpoints" / f"best-epoch{epoch:02d}.pt"
            save(best_path, model, optimizer, epoch, step)
        save(run_dir / "checkpoints" / "last.pt", model, optimizer, epoch, step)  # every epoch, for resume
    norms = torch.stack(rows).cpu()  # one device-to-host copy at the end
    with (run_dir / "grad_norms.csv").open("w", newline="") as f:
        csv.writer(f).writerows([[i, loss, *r] for i, (loss, r) in
                                 enumerate(zip(torch.stack(losses).tolist(), norms.tolist()))])
    return {"losses": torch.stack(losses).cpu(), "norms": norms, "model": model, "dev_best": best,
            "fit_seconds": time.perf_counter() - start, "fit_cpu_seconds": time.process_time() - start_cpu}


def main(argv=None) -> None:
    import argparse

    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(prog="python -m benchmarks.plain_loop",
                                     description="Fit each config's plain loop, one after the other.")
    parser.add_argument("run_dir", help="each run's dir is RUN_DIR/<its seed>")
    parser.add_argument("configs", nargs="+", metavar="CONFIG_JSON", help="a run's resolved config, as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for text in args.configs:
        cfg = OmegaConf.create(json.loads(text))
        fit_plain(cfg, Path(args.run_dir) / str(cfg.seed))


if __name__ == "__main__":
    main()
