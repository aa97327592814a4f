"""A run's answer, as the last lines it logs: how it ended, its accuracies, how far the gradient
norms rose and where they ended, and where its files are. The numbers are those of metrics.json; the
step of each peak comes from the monitor's rows (metrics.json keeps the peak's value only)."""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path

from srn_lightning import record
from srn_lightning.files import shown

PARAMETERS = ("W", "U", "b")


def lines(metrics: dict, columns: dict, run_dir, launched=None) -> list[str]:
    """The answer of a run that reached its test (`completed` or `diverged`), line by line; its
    paths relative to `launched`, where the command was launched (by default `launch_dir()`)."""
    run_dir = Path(run_dir)
    launched = launched or launch_dir()
    status = metrics["status"]
    if status == "diverged":
        status += f" at step {metrics['diverged_step']}"
    out = [f"{status} after {_count(metrics['epochs'], 'epoch')} ({_count(metrics['steps'], 'step')}, fit "
           f"{metrics['fit_seconds']:.1f} s): dev best {_num(metrics['dev_best'], '.3f')}, "
           f"test acc {_num(metrics['test_acc'], '.3f')}"
           + (f" ({metrics['best_checkpoint']})" if metrics.get("best_checkpoint") else "")]
    for i, name in enumerate(PARAMETERS):
        head = "pre-clip grad norm of " if i == 0 else " " * len("pre-clip grad norm of ")
        step = peak_step(columns, name)
        out.append(f"{head}{name}: peak {_num(metrics.get(f'{name}_pre_max'))}"
                   + ("" if step is None else f" at step {step}")
                   + f", last {_num(metrics.get(f'{name}_pre_last'))}")
    where = shown(run_dir, launched)
    figure = run_dir / (record.FIGURE_STEM + ".png")
    out.append(f"run dir: {where}")
    if figure.is_file():  # an answer names only what the run wrote
        out.append(f"figure: {shown(figure, launched)}")
    if (run_dir / "tb").is_dir():
        out.append(f"dashboards: tensorboard --logdir {shlex.quote(str(where))}")
    return out


def launch_dir() -> str:
    """Where the command was launched: the working dir, unless Hydra changed it for the job
    (hydra.job.chdir=true), then the one it was launched from."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    return get_original_cwd() if HydraConfig.initialized() else os.getcwd()


def peak_step(columns: dict, name: str) -> int | None:
    """The step of the largest finite pre-clip norm of `name` (its first, if reached twice)."""
    best = None
    for step, value in zip(columns.get("step", []), columns.get(f"{name}_pre", [])):
        if math.isfinite(value) and (best is None or value > best[1]):
            best = (step, value)
    return None if best is None else best[0]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _num(x, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)
