"""The run's callbacks, one job each: measure at every optimizer step (`GradNormMonitor`: the
parameters' gradient norms; `GradFlowMonitor`: the gradient at every position of the sequence and
the spectral norm of U), stop on non-finite values (`StopOnNonFinite`), write what was measured
(`RowWriter`: a CSV and the loggers), keep the run's config in its checkpoints (`RunConfig`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.loggers import TensorBoardLogger

from srn_lightning.files import open_nofollow
from srn_lightning.record import csv_text


def norms_of(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The L2 norm of each tensor, as `torch.nn.utils.get_total_norm` takes them before it
    combines them (the same bits): `torch._foreach_norm`, a private op, called directly because
    get_total_norm's grouping by device costs more than the norms at this model's size (the
    monitor's and the NaN/Inf check's hooks: 83 us a step, where they took 116 us through
    get_total_norm and a norm per tracked parameter; the memory experiment's SRN)."""
    return list(torch._foreach_norm(tensors)) if tensors else []


class RowMonitor(Callback):
    """What a per-step monitor shares: a row per optimizer step, `[step, epoch, *values]` (its
    `columns`), kept on the device as it is measured and copied to the host at once when asked for
    (`table()`), once an epoch. The rows are part of the callback's state in checkpoints: a fit
    resumed from one starts with the rows of the steps before it (testing a checkpoint leaves them
    alone). They are kept as float32, which holds every measured value and every step number below
    2**24 exactly."""

    columns: list[str]

    def __init__(self) -> None:
        self.latest: torch.Tensor | None = None  # the last step's values, on the device
        self._pending: list[torch.Tensor] = []
        self._pending_steps: list[tuple[int, int]] = []
        self._table = torch.zeros(0, len(self.columns))
        self._restored: torch.Tensor | None = None  # from a checkpoint, for the fit that resumes it

    def on_fit_start(self, trainer, pl_module) -> None:
        # on_fit_start, not on_train_start: a fit resumed from its final checkpoint skips training
        # (and on_train_start) and must still have the rows. Lightning has loaded the state by now.
        restored = self._restored if self._restored is not None else torch.zeros(0, len(self.columns))
        self._table, self._restored = restored, None
        self._pending, self._pending_steps, self.latest = [], [], None

    def append(self, trainer, values: torch.Tensor) -> None:
        """The values of the optimizer step that just ended (Lightning has counted it already)."""
        self.latest = values
        self._pending.append(values)
        self._pending_steps.append((trainer.global_step - 1, trainer.current_epoch))

    def table(self) -> torch.Tensor:
        """Every row so far, [steps, columns] on the host (one device-to-host copy for the new ones)."""
        if self._pending:
            values = torch.stack(self._pending).float().cpu()
            steps = torch.tensor(self._pending_steps, dtype=torch.float32)
            self._table = torch.cat([self._table, torch.cat([steps, values], dim=1)])
            self._pending, self._pending_steps = [], []
        return self._table

    def rows(self, start: int = 0) -> list[list]:
        """`table()` from row `start` on, as lists: step and epoch as int, the values as float."""
        return [[int(r[0]), int(r[1]), *r[2:]] for r in self.table()[start:].tolist()]

    def state_dict(self) -> dict:
        return {"columns": list(self.columns), "rows": self.table()}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning loads callback states for test too: the rows are taken up only when a fit starts.
        self._restored = state_dict["rows"]


class GradNormMonitor(RowMonitor):
    r"""Measures, at every optimizer step, the L2 norms of the gradients of the given parameters and
    of all parameters together ("total", the quantity `clip=norm` bounds), before and after clipping,
    with the step's loss.

    Before clipping: in `on_before_optimizer_step`, which Lightning runs before
    `configure_gradient_clipping`. After clipping: Lightning has no hook between clipping and
    `optimizer.step()`, but SGD and Adam leave `.grad` as they found it and Lightning zeroes it only
    in the next step's closure, so in `on_train_batch_end` the gradients are still the clipped ones
    the step used. The norms are those of Lightning's `grad_norm`, without its host sync per
    parameter. A row is `[step, epoch, loss, <name>_pre ..., total_pre, <name>_post ..., total_post]`.
    A run that does not clip (`clips=False`) has the same gradients after as before: the post-clip
    norms are the pre-clip ones, measured once.

    Args:
        parameters: the parameters to report by name, e.g. the module's
            ``tracked_parameters()`` (``{"W": ..., "U": ..., "b": ...}``).
        clips: whether anything changes the gradients after `on_before_optimizer_step` (a clip
            mode); False: the post-clip norms are the pre-clip ones.

    Example::

        monitor = GradNormMonitor(module.tracked_parameters())
        Trainer(callbacks=[monitor]).fit(module, datamodule)
        monitor.table()[:, monitor.columns.index("W_pre")]  # W's pre-clip gradient norm, step by step
    """

    def __init__(self, parameters: Mapping[str, torch.nn.Parameter], clips: bool = True) -> None:
        self.names = list(parameters)
        self.clips = clips
        names = [*self.names, "total"]
        self.columns = ["step", "epoch", "loss", *(f"{n}_pre" for n in names), *(f"{n}_post" for n in names)]
        super().__init__()
        self._tracked = list(parameters.values())
        self._params: list[torch.nn.Parameter] = []
        self._tracked_at: list[int] = []  # where the tracked parameters are in `_params`
        self._loss: torch.Tensor | None = None
        self._pre: torch.Tensor | None = None

    def _norms(self) -> torch.Tensor:
        """[<tracked>..., total]: every gradient's norm in one call (0 for a parameter without
        one), the tracked ones picked out, and the total over them."""
        grads = [p.grad for p in self._params]
        found = iter(norms_of([g for g in grads if g is not None]))
        zero = torch.zeros((), device=self._tracked[0].device)
        norms = [zero if g is None else next(found) for g in grads]
        return torch.stack([*(norms[i] for i in self._tracked_at), torch.linalg.vector_norm(torch.stack(norms))])

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        self._params = list(pl_module.parameters())
        self._tracked_at = [next(i for i, p in enumerate(self._params) if p is t) for t in self._tracked]

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._loss = loss.detach().reshape(1)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._pre = torch.cat([self._loss, self._norms()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pre is None:  # no optimizer step ran for this batch
            self.latest = None
            return
        post = self._norms() if self.clips else self._pre[1:]
        self.append(trainer, torch.cat([self._pre, post]))
        self._pre = None


class GradFlowMonitor(RowMonitor):
    r"""Measures, at every optimizer step, how the gradient flows back through time: the L2 norm
    g_t = ||dL/dh_t|| (over the batch and the hidden units) of the gradient of the step's training
    loss with respect to the hidden state at every position t = 1..T, and for an LSTM the same for
    its cell state c_t; with the spectral norm sigma_max(U) of the recurrent weight the step used
    (for tanh, sigma_max(U) < 1 is sufficient for vanishing and > 1 necessary for explosion).

    The states come from the cell, which keeps them with their gradients retained when its
    `keep_states` is set (this callback sets it for the steps it measures). They are read in
    `on_before_optimizer_step`: after the step's backward pass, before clipping and the update.
    A row is `[step, epoch, sigma_max_U, h_1 ... h_T, (c_1 ... c_T)]`.

    Args:
        cell: the recurrent cell (``module.model.rnn_model``).
        length: T, the sequence length.
        every: measure the steps whose number is a multiple of it (1: every step); the others
            run without keeping the states.

    Example::

        flow = GradFlowMonitor(module.model.rnn_model, length=20)
        Trainer(callbacks=[flow]).fit(module, datamodule)
        flow.table()[-1, 3:]  # g_1 .. g_T at the last step
    """

    def __init__(self, cell: torch.nn.Module, length: int, every: int = 1) -> None:
        self.cell, self.length, self.every = cell, length, every
        self.has_cell_state = cell.has_cell_state
        positions = range(1, length + 1)
        self.columns = ["step", "epoch", "sigma_max_U", *(f"h_{t}" for t in positions),
                        *((f"c_{t}" for t in positions) if self.has_cell_state else ())]
        super().__init__()
        self._values: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.cell.keep_states = trainer.global_step % self.every == 0

    def on_train_end(self, trainer, pl_module) -> None:
        self.cell.keep_states = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.cell.keep_states = False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.cell.keep_states:  # a step between the measured ones
            return
        grads = [s.grad for s in self.cell.states + self.cell.cell_states]
        zero = torch.zeros((), device=self.cell.U.device)
        found = iter(norms_of([g for g in grads if g is not None]))
        norms = [zero if g is None else next(found) for g in grads]
        with torch.no_grad():
            sigma = torch.linalg.matrix_norm(self.cell.U, ord=2)
        self._values = torch.stack([sigma, *norms])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._values is not None:
            self.append(trainer, self._values)
            self._values = None
        self.cell.states, self.cell.cell_states = [], []  # the graph they hold is done with


class Diverged(RuntimeError):
    """The loss, a gradient or a weight became NaN or Inf: training stops at that step."""

    def __init__(self, step: int) -> None:
        super().__init__(f"loss or gradients became NaN/Inf at step {step}")
        self.step = step

    def __reduce__(self):  # crosses a process boundary intact
        return type(self), (self.step,)


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
        self._params: list[torch.nn.Parameter] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self._params = list(pl_module.parameters())  # walked once, not every step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        row = self.monitor.latest
        if row is None:
            return
        with torch.no_grad():
            weights = torch.linalg.vector_norm(torch.stack(norms_of(self._params)))
        if not torch.isfinite(torch.cat([row, weights.reshape(1)])).all():
            raise Diverged(trainer.global_step - 1)


LOG10_FLOOR = -10.0  # what a log10 tag shows for a value below 1e-10, exactly 0 included


class RowWriter(Callback):
    """Writes the rows of a `RowMonitor` to a CSV (header: the monitor's `columns`) and the columns
    named in `tags` to every logger, under those tags, at each row's step whose number is a multiple
    of `every` (a long run's loggers get every k-th step; the CSV gets every row). It writes at the end of
    every epoch, whenever a checkpoint is saved (so the CSV reaches as far as every checkpoint), and
    when training ends or fails. When a fit starts, the CSV is written anew from the monitor's rows
    (a resumed run's rows come from its checkpoint).

    Two views of a column for the loggers, which a dashboard's defaults cannot hide (TensorBoard
    smooths a line and scales its chart to the 5th-95th percentile of its points, so a one-step
    spike is off the chart and a fall to 0 is squashed under it): `log10_tags`, log10 of the value
    (floored at LOG10_FLOOR: a norm of exactly 0 reads -10), and `peak_tags`, the largest finite
    value so far, which holds a one-step spike's height for every step after it. A peak is logged
    at the steps where it rises and at the last step of every write (each epoch's end): the same
    line for a fraction of the events (a scalar costs the training thread about 50 us).

    Args:
        monitor: the monitor whose rows to write.
        csv_path: where the CSV goes.
        tags: column -> logger tag, for the columns the loggers get as they are.
        log10_tags: column -> logger tag, for the columns the loggers get as log10.
        peak_tags: column -> logger tag, for the columns the loggers get as their peak so far.
        every: the loggers get the tags and log10 tags of the steps whose number is a multiple of it
            (a peak whenever it rises, and every peak at the end of each write).

    Example::

        monitor = GradNormMonitor(module.tracked_parameters())
        writer = RowWriter(monitor, run_dir / "grad_norms.csv", {"loss": "train/loss"},
                           log10_tags={"W_pre": "grad_norm_pre_log10/W"})
        Trainer(callbacks=[monitor, writer])
    """

    def __init__(self, monitor: RowMonitor, csv_path, tags: Mapping[str, str],
                 log10_tags: Mapping[str, str] | None = None, peak_tags: Mapping[str, str] | None = None,
                 every: int = 1) -> None:
        self.monitor, self.csv_path, self.every = monitor, Path(csv_path), every
        self.tags = [(monitor.columns.index(c), tag) for c, tag in tags.items()]
        self.log10_tags = [(monitor.columns.index(c), tag) for c, tag in (log10_tags or {}).items()]
        self.peak_tags = [(monitor.columns.index(c), tag) for c, tag in (peak_tags or {}).items()]
        self._written = 0
        self._peaks: dict[int, float] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        rows = self.monitor.rows()  # a resumed run's rows before its checkpoint; none in a new run
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open_nofollow(self.csv_path, "w") as f:
            f.write(csv_text([self.monitor.columns, *rows]))
        self._written = len(rows)
        self._peaks = {}
        for row in rows:  # a resumed run's peaks go on from those of its steps before
            self._peak(row)

    def _peak(self, row: list) -> dict[str, float]:
        """The peaks that rise at `row`, by tag."""
        rose = {}
        for i, tag in self.peak_tags:
            if math.isfinite(row[i]) and row[i] > self._peaks.get(i, -math.inf):
                self._peaks[i] = rose[tag] = row[i]
        return rose

    def scalars(self, row: list, last: bool = False, sampled: bool = True) -> dict[str, float]:
        """What the loggers get for one row: its tags and log10 tags (if the row is `sampled`), and
        the peaks that rise at it (every peak so far at the `last` row of a write)."""
        out = {tag: row[i] for i, tag in self.tags} if sampled else {}
        if sampled:
            out |= {tag: max(math.log10(row[i]), LOG10_FLOOR) if row[i] > 0 else LOG10_FLOOR
                    for i, tag in self.log10_tags if not math.isnan(row[i])}
        rose = self._peak(row)
        if last:
            rose = {tag: self._peaks[i] for i, tag in self.peak_tags if i in self._peaks}
        return out | rose

    def flush(self, trainer) -> None:
        rows = self.monitor.rows(self._written)
        if not rows:
            return
        with open_nofollow(self.csv_path, "a") as f:
            f.write(csv_text(rows))
        self._written += len(rows)
        if self.tags or self.log10_tags or self.peak_tags:
            scalars = [(values, row[0]) for n, row in enumerate(rows)
                       if (values := self.scalars(row, last=n == len(rows) - 1, sampled=row[0] % self.every == 0))]
            for logger in trainer.loggers:
                for values, step in scalars:
                    logger.log_metrics(values, step=step)

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


class CheckedCheckpointIO(TorchCheckpointIO):
    """The Trainer's checkpoint IO, which takes a checkpoint that was read already (by the checks
    before the run) instead of reading the file again; any other is read as Lightning reads it.

    Args:
        checked: path -> the checkpoint's contents if they were read already, else None.

    Example::

        Trainer(plugins=[CheckedCheckpointIO(resume.take_checked)])
    """

    def __init__(self, checked: Callable[[Any], dict | None]) -> None:
        super().__init__()
        self.checked = checked

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        state = self.checked(path)
        if state is not None:
            return state
        if map_location is None:
            return super().load_checkpoint(path, weights_only=weights_only)
        return super().load_checkpoint(path, map_location, weights_only)


def add_chart(trainer, title: str, charts: Mapping[str, list[str]]) -> None:
    """A TensorBoard "custom scalars" chart per entry: the tags overlaid in one plot."""
    layout = {title: {name: ["Multiline", tags] for name, tags in charts.items()}}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_custom_scalars(layout)


def log_image(trainer, tag: str, image, step: int) -> None:
    """An RGB(A) image [height, width, channels] to every TensorBoard logger of `trainer`."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image[..., :3], step, dataformats="HWC")
