"""The run's callbacks, one job each: measure the gradient norms (`GradNormMonitor`), stop on
non-finite values (`StopOnNonFinite`), write what was measured (`GradNormWriter`), keep the run's
config in its checkpoints (`RunConfig`)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.nn.utils import get_total_norm

from srn_lightning import record
from srn_lightning.files import open_nofollow


class GradNormMonitor(Callback):
    r"""Measures, at every optimizer step, the L2 norms of the gradients of the given parameters and
    of all parameters together ("total", the quantity `clip=norm` bounds), before and after clipping,
    with the step's loss, and keeps them in memory.

    Before clipping: in `on_before_optimizer_step`, which Lightning runs before
    `configure_gradient_clipping`. After clipping: Lightning has no hook between clipping and
    `optimizer.step()`, but SGD leaves `.grad` as it found it and Lightning zeroes it only in the
    next step's closure, so in `on_train_batch_end` the gradients are still the clipped ones the
    step used. The norms are those of Lightning's `grad_norm`, without its host sync per parameter:
    a step's row stays on the device until `rows()` copies the new ones to the host at once.

    A row is `[step, epoch, loss, <name>_pre ..., total_pre, <name>_post ..., total_post]`. The rows
    are part of the callback's state in checkpoints: a fit resumed from one starts with the rows of
    the steps before it (testing a checkpoint leaves the rows alone).

    Args:
        parameters: the parameters to report by name, e.g. the module's
            ``tracked_parameters()`` (``{"W": ..., "U": ..., "b": ...}``).

    Example::

        monitor = GradNormMonitor(module.tracked_parameters())
        Trainer(callbacks=[monitor]).fit(module, datamodule)
        record.columns(monitor.rows())["W_pre"]  # W's pre-clip gradient norm, step by step
    """

    def __init__(self, parameters: Mapping[str, torch.nn.Parameter]) -> None:
        self.names = list(parameters)
        self._tracked = list(parameters.values())
        self._params: list[torch.nn.Parameter] = []
        self._loss: torch.Tensor | None = None
        self._pre: torch.Tensor | None = None
        self.latest: torch.Tensor | None = None  # the last step's row (less step and epoch), on the device
        self._pending: list[torch.Tensor] = []
        self._pending_steps: list[tuple[int, int]] = []
        self._rows: list[list] = []
        self._restored: list[list] | None = None  # from a checkpoint, for the fit that resumes it

    def _norms(self) -> torch.Tensor:
        grads = [p.grad for p in self._params if p.grad is not None]
        zero = torch.zeros((), device=self._tracked[0].device)
        tracked = [zero if p.grad is None else torch.linalg.vector_norm(p.grad) for p in self._tracked]
        return torch.stack([*tracked, get_total_norm(grads)])

    def on_fit_start(self, trainer, pl_module) -> None:
        # on_fit_start, not on_train_start: a fit resumed from its final checkpoint skips training
        # (and on_train_start) and must still have the rows. Lightning has loaded the state by now.
        self._params = list(pl_module.parameters())
        self._rows, self._restored = self._restored or [], None
        self._pending, self._pending_steps = [], []

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._loss = loss.detach().reshape(1)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._pre = torch.cat([self._loss, self._norms()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pre is None:  # no optimizer step ran for this batch
            self.latest = None
            return
        self.latest = torch.cat([self._pre, self._norms()])
        self._pending.append(self.latest)
        self._pending_steps.append((trainer.global_step - 1, trainer.current_epoch))
        self._pre = None

    def rows(self) -> list[list]:
        """Every row so far, on the host (one device-to-host copy for the rows new since the last call)."""
        if self._pending:
            values = torch.stack(self._pending).cpu().tolist()
            self._rows += [[s, e, *v] for (s, e), v in zip(self._pending_steps, values)]
            self._pending, self._pending_steps = [], []
        return self._rows

    def state_dict(self) -> dict:
        return {"rows": torch.tensor(self.rows(), dtype=torch.float64).reshape(-1, len(record.COLUMNS))}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning loads callback states for test too: the rows are taken up only when a fit starts.
        # float64 holds each float32 norm and each step number exactly.
        self._restored = [[int(r[0]), int(r[1]), *r[2:]] for r in state_dict["rows"].tolist()]


class Diverged(RuntimeError):
    """The loss, a gradient or a weight became NaN or Inf: training stops at that step."""

    def __init__(self, step: int) -> None:
        super().__init__(f"loss or gradients became NaN/Inf at step {step}")
        self.step = step


class StopOnNonFinite(Callback):
    """Stops training with `Diverged` at the first step whose loss, gradient norms (from `monitor`)
    or updated weights are not finite: no checkpoint is saved from that step on, and the step's row
    is kept. An overflow of the weights (a huge weight decay) shows there before anywhere else.

    It costs the run's one host sync per step; it must come after `monitor` in the callbacks.

    Args:
        monitor: the run's `GradNormMonitor`.

    Example::

        monitor = GradNormMonitor(module.tracked_parameters())
        Trainer(callbacks=[monitor, StopOnNonFinite(monitor)])
    """

    def __init__(self, monitor: GradNormMonitor) -> None:
        self.monitor = monitor

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        row = self.monitor.latest
        if row is None:
            return
        with torch.no_grad():
            weights = get_total_norm(list(pl_module.parameters()))
        if not torch.isfinite(torch.cat([row, weights.reshape(1)])).all():
            raise Diverged(trainer.global_step - 1)


class GradNormWriter(Callback):
    """Writes the rows of a `GradNormMonitor` to `grad_norms.csv` and to every logger
    (`train/loss`, `grad_norm_pre/<name>`, `grad_norm_post/<name>` at each step; on TensorBoard
    also a chart with the parameters' pre- and post-clip norms overlaid). It writes at the end of
    every epoch, whenever a checkpoint is saved (so the CSV reaches as far as every checkpoint), and
    when training ends or fails. On resume the CSV is written anew from the monitor's rows.

    Args:
        monitor: the run's `GradNormMonitor`.
        csv_path: where the CSV goes.

    Example::

        monitor = GradNormMonitor(module.tracked_parameters())
        Trainer(callbacks=[monitor, GradNormWriter(monitor, run_dir / "grad_norms.csv")])
    """

    def __init__(self, monitor: GradNormMonitor, csv_path) -> None:
        self.monitor, self.csv_path = monitor, Path(csv_path)
        names = [*monitor.names, "total"]
        self.tags = ["train/loss", *(f"grad_norm_{when}/{n}" for when in ("pre", "post") for n in names)]
        self._written = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        rows = self.monitor.rows()  # a resumed run's rows before its checkpoint; none in a new run
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open_nofollow(self.csv_path, "w") as f:
            f.write(record.csv_text(rows, header=True))
        self._written = len(rows)

    def on_train_start(self, trainer, pl_module) -> None:
        chart = {f"{when}-clip": ["Multiline", [f"grad_norm_{when}/{n}" for n in self.monitor.names]]
                 for when in ("pre", "post")}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars({f"grad norms ({', '.join(self.monitor.names)})": chart})

    def flush(self, trainer) -> None:
        rows = self.monitor.rows()[self._written:]
        if not rows:
            return
        with open_nofollow(self.csv_path, "a") as f:
            f.write(record.csv_text(rows))
        self._written += len(rows)
        for logger in trainer.loggers:
            for row in rows:
                logger.log_metrics(dict(zip(self.tags, row[2:])), step=row[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.flush(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.flush(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.flush(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.flush(trainer)  # diverged or interrupted: what was measured is kept


class RunConfig(Callback):
    """Saves the config a run is known by (`record.config_summary` and the input size) in every
    checkpoint, so that a resume can tell a checkpoint of another run from its own."""

    def __init__(self, summary: dict) -> None:
        self.summary = dict(summary)

    def state_dict(self) -> dict:
        return dict(self.summary)

    def load_state_dict(self, state_dict: dict) -> None:
        pass  # checked before the fit (resume.check_checkpoint), never taken over


def log_image(trainer, tag: str, image, step: int) -> None:
    """An RGB(A) image [height, width, channels] to every TensorBoard logger of `trainer`."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image[..., :3], step, dataformats="HWC")
