"""GradNormMonitor: the book's per-step gradient norms of W, U and b, before and after clipping."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import grad_norm

from srn_lightning import plots

TRACKED = ("W", "U", "b", "total")
COLUMNS = (
    ["step", "epoch", "loss"] + [f"{n}_pre" for n in TRACKED] + [f"{n}_post" for n in TRACKED]
)
# the logger tag of each norm column, same order: grad_norm_pre/W ... grad_norm_post/total
TAGS = [f"grad_norm_{when}/{n}" for when in ("pre", "post") for n in TRACKED]
CSV_NAME = "grad_norms.csv"
FIGURE_STEM = "grad_norms"


class GradNormMonitor(Callback):
    """Records, every optimizer step, the L2 norm of the gradients of the SRN's W, U, b and of all
    parameters together ("total", the quantity `clip=norm` bounds), both before and after clipping.

    Pre-clip: `on_before_optimizer_step`, which Lightning runs before `configure_gradient_clipping`.
    Post-clip: Lightning has no hook between clipping and `optimizer.step()`; SGD leaves `.grad` as
    it found it and Lightning zeroes it only inside the next step's closure, so in
    `on_train_batch_end` the gradients are still exactly the clipped ones the step used.

    Rows are kept as tensors on the device and written once per epoch, to `grad_norms.csv` in
    `out_dir` and to every logger (TensorBoard: `grad_norm_pre/*`, `grad_norm_post/*` side by side,
    plus a chart with W, U, b overlaid). At the end of fit the book's figure is drawn from the rows.
    """

    def __init__(self, out_dir, rnn_prefix: str = "model.rnn_model.", plot_steps: int = 40,
                 title: str = "") -> None:
        self.out_dir = Path(out_dir)
        self.keys = {n: f"grad_2.0_norm/{rnn_prefix}{n}" for n in ("W", "U", "b")}
        self.keys["total"] = "grad_2.0_norm_total"
        self.plot_steps, self.title = plot_steps, title
        self._pre: torch.Tensor | None = None
        self._rows: list[torch.Tensor] = []
        self._steps: list[tuple[int, int]] = []

    @property
    def csv_path(self) -> Path:
        return self.out_dir / CSV_NAME

    def _norms(self, pl_module) -> torch.Tensor:
        norms = grad_norm(pl_module, norm_type=2)
        return torch.stack([norms[self.keys[n]].to(pl_module.device) for n in TRACKED])

    def on_fit_start(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self.csv_path.open("w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                chart = {
                    f"{when}-clip": ["Multiline", [f"grad_norm_{when}/{n}" for n in ("W", "U", "b")]]
                    for when in ("pre", "post")
                }
                logger.experiment.add_custom_scalars({"grad norms (W, U, b)": chart})

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._pre = self._norms(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach().reshape(1)
        self._rows.append(torch.cat([loss, self._pre, self._norms(pl_module)]))
        self._steps.append((trainer.global_step - 1, trainer.current_epoch))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.flush(trainer)

    def flush(self, trainer) -> None:
        if not self._rows:
            return
        values = torch.stack(self._rows).cpu().tolist()  # one device-to-host copy per epoch
        rows = [[step, epoch, *vals] for (step, epoch), vals in zip(self._steps, values)]
        self._rows, self._steps = [], []
        with self.csv_path.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
        for row in rows:
            metrics = {"train/loss": row[2], **dict(zip(TAGS, row[3:]))}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=row[0])

    def on_train_end(self, trainer, pl_module) -> None:
        self.flush(trainer)
        columns = read_grad_norms(self.csv_path)
        fig = plots.plot_grad_norms(
            columns["step"], columns, self.out_dir / FIGURE_STEM, self.plot_steps, self.title
        )
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("grad_norms", fig, global_step=trainer.global_step)


def read_grad_norms(path) -> dict[str, list]:
    """`grad_norms.csv` as columns: {"step": [...], "W": pre-clip W norms, ..., "W_post": [...]}."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    cols = {c: [float(r[c]) for r in rows] for c in COLUMNS}
    cols["step"] = [int(s) for s in cols["step"]]
    cols.update({n: cols[f"{n}_pre"] for n in TRACKED})
    return cols
