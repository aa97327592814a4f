"""A run's per-step measurements, each one object: the monitor that takes it (a `RowMonitor`), the
callbacks that act on it, its CSV, its logger tags, its figure and its summary numbers. The run
holds a list of them (`for_run`); building the Trainer, writing the CSVs, drawing, the metrics and
an interrupted run's record loop over that list.

A new measurement is a monitor in callbacks.py, a figure in plots.py, and an entry in `for_run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from srn_lightning import plots, record
from srn_lightning.files import naming
from srn_lightning.callbacks import (GradFlowMonitor, GradNormMonitor, RowMonitor, RowWriter, StopOnNonFinite,
                                     add_chart, log_image)


@dataclass
class Measurement:
    """One per-step measurement of a run.

    Args:
        name: its files' stem: `<name>.csv`, `<name>.png`, `<name>.pdf`, and its TensorBoard image.
        monitor: the callback that measures, a row per optimizer step.
        tags: column -> logger tag, for the columns the loggers get every `every`-th step.
        draw: (its columns, every measurement's columns by name, out stem, title) -> the figure's
            pixels; it writes `<out stem>.png` and `.pdf`. A module-level function (or a partial
            of one): it is pickled when the figure is drawn in a process of its own.
        summarise: its columns -> the numbers it adds to metrics.json.
        also: callbacks that act on its rows, after the monitor and before the CSV is written.
        charts: TensorBoard "custom scalars" charts, {title: {chart: [tags]}}.
        log10_tags, peak_tags: column -> logger tag, for the columns the loggers also get as log10
            and as their peak so far (callbacks.RowWriter: views TensorBoard's defaults cannot hide).
        every: the loggers get the rows of the steps whose number is a multiple of it (the CSV
            gets every row the monitor takes).
    """

    name: str
    monitor: RowMonitor
    tags: dict[str, str]
    draw: Callable[[dict, dict, Path, str], Any]
    summarise: Callable[[dict], dict]
    also: list = field(default_factory=list)
    charts: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    log10_tags: dict[str, str] = field(default_factory=dict)
    peak_tags: dict[str, str] = field(default_factory=dict)
    every: int = 1

    def columns(self) -> dict[str, list]:
        """Its rows so far as {column: values}."""
        return record.columns(self.monitor.rows(), self.monitor.columns)

    def callbacks(self, run_dir: Path) -> list:
        """The monitor, what acts on its rows, and the writer of its CSV and logger tags, in the
        order they must run."""
        return [self.monitor, *self.also,
                RowWriter(self.monitor, run_dir / f"{self.name}.csv", self.tags, self.log10_tags,
                          self.peak_tags, self.every)]


def for_run(cfg, module) -> list[Measurement]:
    """The measurements of a run: the grad norms always (the book's figure, and divergence stops the
    run at the step it shows); the gradient's flow through time with `grad_time`. The flow and
    the loggers' per-step scalars are taken every `record_every`-th step, the grad norms' CSV every step."""
    monitor = GradNormMonitor(module.tracked_parameters(), clips=cfg.clip.mode != "none")
    names = [*monitor.names, "total"]
    found = [Measurement(
        name=record.FIGURE_STEM, monitor=monitor,
        tags={"loss": "train/loss"} | {f"{n}_{when}": f"grad_norm_{when}/{n}" for when in ("pre", "post")
                                       for n in names},
        draw=partial(draw_grad_norms, keep_steps=cfg.plot_steps),
        summarise=record.norm_summary,
        also=[StopOnNonFinite(monitor)],
        charts={"grad norms (W, U, b)": {f"{when}-clip": [f"grad_norm_{when}/{n}" for n in monitor.names]
                                         for when in ("pre", "post")}},
        # the explosion as TensorBoard shows it by default: the pre-clip norms as log10 (the fall
        # to 0) and as their peak so far (the one-step spike's height)
        log10_tags={f"{n}_pre": f"grad_norm_pre_log10/{n}" for n in names},
        peak_tags={f"{n}_pre": f"grad_norm_pre_peak/{n}" for n in names},
        every=cfg.record_every,
    )]
    if cfg.grad_time:
        found.append(Measurement(
            name=record.GRAD_TIME_STEM,
            monitor=GradFlowMonitor(module.model.rnn_model, cfg.length, cfg.record_every),
            tags={"sigma_max_U": "grad_flow/sigma_max_U"},
            draw=draw_grad_time,
            summarise=record.grad_time_summary,
            every=cfg.record_every,
        ))
    return found


def draw_grad_norms(own: dict, every: dict, out_stem: Path, title: str, keep_steps: int | None):
    """The grad norms' figure (`Measurement.draw`): the book's, its first `keep_steps` steps."""
    return plots.plot_grad_norms(own, out_stem, keep_steps, title=title)


def draw_grad_time(own: dict, every: dict, out_stem: Path, title: str):
    """The gradient's flow through time (`Measurement.draw`), with the grad norms' peak."""
    return plots.plot_grad_time(own, every[record.FIGURE_STEM], out_stem, title=title)


def add_charts(trainer, measured: list[Measurement]) -> None:
    """Each measurement's TensorBoard charts."""
    for m in measured:
        for title, charts in m.charts.items():
            add_chart(trainer, title, charts)


def draw(trainer, measured: list[Measurement], run_dir: Path, title: str) -> None:
    """Each measurement's figure that has rows to draw, as PNG and PDF, and as an image in
    TensorBoard at the run's last step."""
    for name, draw_one, args in figures(measured, run_dir, title):
        log_figure(trainer, run_dir, name, draw_one(*args))


def figures(measured: list[Measurement], run_dir: Path, title: str) -> list[tuple[str, Callable, tuple]]:
    """The figures `draw` draws: (name, drawing function, its arguments) for each measurement with
    rows to draw; the function writes the PNG and PDF and returns the pixels (`log_figure`'s)."""
    every = {m.name: m.columns() for m in measured}
    return [(m.name, m.draw, (every[m.name], every, run_dir / m.name, title))
            for m in measured if every[m.name].get("step")]


def log_figure(trainer, run_dir: Path, name: str, pixels) -> None:
    """A figure's pixels as an image in the run's TensorBoard, at its last step."""
    with naming(run_dir / "tb"):  # a write that fails names TensorBoard's dir
        log_image(trainer, name, pixels, trainer.global_step)


def summary(measured: list[Measurement]) -> dict:
    """The summary numbers of every measurement, in the list's order."""
    return {k: v for m in measured for k, v in m.summarise(m.columns()).items()}


def epochs_done(trainer) -> int:
    """The epochs trained to their end: all their steps done and their end (and last.ckpt)
    reached. An epoch cut short (by +trainer.max_steps, an interrupt, divergence) is not one;
    `steps` says how far it went."""
    per_epoch = trainer.num_training_batches
    if not 0 < per_epoch < float("inf"):  # no training data loaded (stopped before the fit)
        return trainer.current_epoch
    return min(trainer.global_step // int(per_epoch), trainer.current_epoch)
