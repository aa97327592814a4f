"""GradNormMonitor: the book's per-step gradient norms of W, U and b, before and after clipping."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from srn_lightning import plots

TRACKED = ("W", "U", "b", "total")
COLUMNS = (
    ["step", "epoch", "loss"] + [f"{n}_pre" for n in TRACKED] + [f"{n}_post" for n in TRACKED]
)
# the logger tag of each norm column, same order: grad_norm_pre/W ... grad_norm_post/total
TAGS = [f"grad_norm_{when}/{n}" for when in ("pre", "post") for n in TRACKED]
CSV_NAME = "grad_norms.csv"
FIGURE_STEM = "grad_norms"


class Diverged(RuntimeError):
    """The loss or a gradient became NaN or Inf: training stops before that step is applied."""

    def __init__(self, step: int) -> None:
        super().__init__(f"loss or gradients became NaN/Inf at step {step}")
        self.step = step


class GradNormMonitor(Callback):
    """Records, every optimizer step, the L2 norm of the gradients of the SRN's W, U, b and of all
    parameters together ("total", the quantity `clip=norm` bounds), both before and after clipping.

    Pre-clip: `on_before_optimizer_step`, which Lightning runs before `configure_gradient_clipping`.
    Post-clip: Lightning has no hook between clipping and `optimizer.step()`; SGD leaves `.grad` as
    it found it and Lightning zeroes it only inside the next step's closure, so in
    `on_train_batch_end` the gradients are still exactly the clipped ones the step used.

    Rows are kept as tensors on the device and written once per epoch, to `grad_norms.csv` in
    `out_dir` and to every logger (TensorBoard: `grad_norm_pre/*`, `grad_norm_post/*` side by side,
    plus a chart with W, U, b overlaid), and whenever a checkpoint is saved, so the CSV always
    reaches at least as far as every checkpoint. `draw()` makes the book's figure from the rows.

    A step whose loss, gradient norms or updated weights are not finite raises `Diverged` (its row
    is written): training stops there, and no checkpoint is saved from that step on. On resume, rows
    from the checkpoint's step on are dropped and written again.
    """

    def __init__(self, out_dir, rnn_prefix: str = "model.rnn_model.", plot_steps: int = 40,
                 title: str = "") -> None:
        self.out_dir = Path(out_dir)
        self.names = {n: f"{rnn_prefix}{n}" for n in ("W", "U", "b")}
        self.plot_steps, self.title = plot_steps, title
        self._loss: torch.Tensor | None = None
        self._pre: torch.Tensor | None = None
        self._params: list[torch.nn.Parameter] | None = None
        self._rows: list[torch.Tensor] = []
        self._steps: list[tuple[int, int]] = []

    @property
    def csv_path(self) -> Path:
        return self.out_dir / CSV_NAME

    def _norms(self, pl_module) -> torch.Tensor:
        """[W, U, b, total] as one tensor on the device. The same numbers as Lightning's
        `grad_norm(pl_module, 2)`, which costs a host sync per parameter (its total is built with
        `torch.tensor(list of norms)`) and a dict of names every step. Here: one foreach op."""
        if self._params is None:  # named_parameters() walks the module tree: once, not every step
            named = dict(pl_module.named_parameters())
            self._params = list(named.values())
            self._tracked = [list(named).index(self.names[n]) for n in ("W", "U", "b")]
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):  # a frozen or unused parameter: the slow, general path
            return self._norms_general(pl_module)
        norms = torch.stack(torch._foreach_norm(grads))
        return torch.cat([norms[self._tracked], torch.linalg.vector_norm(norms).reshape(1)])

    def _norms_general(self, pl_module) -> torch.Tensor:
        from lightning.pytorch.utilities import grad_norm

        norms = grad_norm(pl_module, norm_type=2)
        keys = [f"grad_2.0_norm/{self.names[n]}" for n in ("W", "U", "b")] + ["grad_2.0_norm_total"]
        return torch.stack([norms[k].to(pl_module.device) for k in keys])

    def on_train_start(self, trainer, pl_module) -> None:
        self._params = None  # found again on the first step: this fit's module
        # after a checkpoint is restored: keep the rows before its step, drop the ones after it
        self.out_dir.mkdir(parents=True, exist_ok=True)
        kept = []
        if trainer.global_step > 0 and self.csv_path.exists():
            with self.csv_path.open(newline="") as f:
                kept = [r for r in list(csv.reader(f))[1:] if int(r[0]) < trainer.global_step]
        with self.csv_path.open("w", newline="") as f:
            csv.writer(f).writerows([COLUMNS, *kept])
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                chart = {
                    f"{when}-clip": ["Multiline", [f"grad_norm_{when}/{n}" for n in ("W", "U", "b")]]
                    for when in ("pre", "post")
                }
                logger.experiment.add_custom_scalars({"grad norms (W, U, b)": chart})

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._loss = loss.detach().reshape(1)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._pre = torch.cat([self._loss, self._norms(pl_module)])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pre is None:  # no optimizer step ran for this batch
            return
        row = torch.cat([self._pre, self._norms(pl_module)])
        step = trainer.global_step - 1
        self._rows.append(row)
        self._steps.append((step, trainer.current_epoch))
        self._pre = None
        with torch.no_grad():  # the weights the step left: an overflow shows here first
            weights = torch.stack(torch._foreach_norm(self._params)).sum()
        # the run's one host sync per step: NaN/Inf must stop it at the step where it happens
        if not torch.isfinite(torch.cat([row, weights.reshape(1)])).all():
            raise Diverged(step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.flush(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.flush(trainer)  # resume keeps the rows before the checkpoint: they must be on disk

    def flush(self, trainer) -> None:
        if not self._rows:
            return
        values = torch.stack(self._rows).cpu().tolist()  # one device-to-host copy per epoch
        rows = [[step, epoch, *vals] for (step, epoch), vals in zip(self._steps, values)]
        self._rows, self._steps = [], []
        with self.csv_path.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
        from tensorboard.compat.proto.summary_pb2 import Summary  # loaded by then: TensorBoardLogger's
        from torch.utils.tensorboard import SummaryWriter

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and isinstance(logger.experiment, SummaryWriter):
                # One event per step with its nine scalars, instead of one event per scalar via
                # log_metrics/add_scalar: the same tags and values at a tenth of the cost.
                writer = logger.experiment.file_writer
                for row in rows:
                    values = [Summary.Value(tag=t, simple_value=v)
                              for t, v in zip(["train/loss", *TAGS], row[2:])]
                    writer.add_summary(Summary(value=values), row[0])
            else:
                for row in rows:
                    logger.log_metrics({"train/loss": row[2], **dict(zip(TAGS, row[3:]))}, step=row[0])

    def on_train_end(self, trainer, pl_module) -> None:
        self.flush(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.flush(trainer)  # diverged or interrupted: what was measured is kept

    def draw(self, trainer) -> None:
        """The book's figure from grad_norms.csv, as PNG and PDF, and as an image in TensorBoard."""
        columns = read_grad_norms(self.csv_path)
        plots.plot_grad_norms(
            columns["step"], columns, self.out_dir / FIGURE_STEM, self.plot_steps, self.title
        )
        png = (self.out_dir / FIGURE_STEM).with_suffix(".png")
        tensorboards = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if tensorboards:
            # The PNG just written, as the dashboard's image: add_figure would draw the figure again.
            from matplotlib.image import imread

            image = imread(png)[..., :3]
            for logger in tensorboards:
                logger.experiment.add_image("grad_norms", image, trainer.global_step, dataformats="HWC")


def read_grad_norms(path) -> dict[str, list]:
    """`grad_norms.csv` as columns: {"step": [...], "W": pre-clip W norms, ..., "W_post": [...]}."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    cols = {c: [float(r[c]) for r in rows] for c in COLUMNS}
    cols["step"] = [int(s) for s in cols["step"]]
    cols.update({n: cols[f"{n}_pre"] for n in TRACKED})
    return cols
