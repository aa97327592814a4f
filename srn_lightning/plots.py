"""Figures. Pure functions: data in, files out; no training state. matplotlib is imported lazily
and without pyplot, so importing this module costs nothing and no GUI backend is ever touched."""

from __future__ import annotations

from pathlib import Path

# The book's figure: W solid, U dash-dot, b dashed, in its three colours.
STYLES = {"W": ("-", "#8E004D"), "U": ("-.", "#E20079"), "b": ("--", "#3D3D3F")}


def plot_grad_norms(columns: dict, out_stem, keep_steps: int | None = None, title: str = ""):
    """The book's figure: the pre-clip L2 gradient norm of W, U and b (`columns["W_pre"]`, ...)
    against `columns["step"]`, the first `keep_steps` steps (all if None). Writes `<out_stem>.png`
    and `.pdf`; returns the PNG's pixels, RGBA [height, width, 4]."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imsave

    steps = columns["step"]
    n = len(steps) if keep_steps is None else min(keep_steps, len(steps))
    fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for name, (style, color) in STYLES.items():
        ax.plot(steps[:n], columns[f"{name}_pre"][:n], style, color=color, label=f"{name}_grad_l2")
    ax.set_xlabel("step")
    ax.set_ylabel("L2 norm")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    out_stem = Path(out_stem)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # drawn once: the PNG and the returned pixels are this drawing
    pixels = np.asarray(canvas.buffer_rgba()).copy()
    imsave(out_stem.with_suffix(".png"), pixels)
    # Constrained layout is most of a draw's cost: the PDF reuses the layout the drawing found.
    fig.set_layout_engine("none")
    fig.savefig(out_stem.with_suffix(".pdf"))
    return pixels


NORM_FLOOR = 1e-6  # lowest norm the sweep figure shows
LEGEND_MAX = 10  # more labels than this (a search's trials) make a legend that hides the plot


def plot_sweep(panels: dict, rows: list, cols: list, accuracy: dict, x_labels: list, out_stem,
               title: str = ""):
    """The sweep figure. Top: a grid of panels, one per (row, col) = (length, clip), each with the
    pre-clip gradient norm of W of every job in it against the step, log y; `panels[(row, col)]` is a list
    of (label, steps, norms), the same label (the seeds of one setting) drawn in the same colour.
    Bottom: test accuracy, `accuracy[series] = [(x_label, mean, std, n), ...]`, mean with a std error
    bar, `n` (the seeds it rests on) written next to it. Writes `<out_stem>.png` and `.pdf`."""
    from matplotlib.figure import Figure

    # Fixed margins in inches, no layout engine: the report is redrawn after every job of a sweep,
    # and constrained layout would double the cost of each drawing.
    width, height = 3.0 * max(len(cols), 2) + 1.0, 2.2 * len(rows) + 3.4
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(
        len(rows) + 1, len(cols), height_ratios=[2.2] * len(rows) + [2.4], hspace=0.5, wspace=0.12,
        left=0.8 / width, right=1 - 0.2 / width, top=1 - 0.6 / height, bottom=0.5 / height,
    )
    share = None
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            ax = share = fig.add_subplot(grid[i, j], sharex=share, sharey=share)
            colors: dict = {}
            for label, steps, norms in panels.get((row, col), []):
                new = label not in colors
                color = colors.setdefault(label, f"C{len(colors) % 10}")
                ax.plot(steps, norms, color=color, lw=1, alpha=0.8, label=label if new and label else None)
            ax.set_yscale("log")
            ax.set_title(f"{row}, {col}", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("step", fontsize=8)
            else:
                ax.tick_params(labelbottom=False)
            if j == 0:
                ax.set_ylabel("pre-clip grad norm of W", fontsize=8)
            else:
                ax.tick_params(labelleft=False)
            ax.tick_params(labelsize=7)
            if any(colors) and len(colors) <= LEGEND_MAX:
                ax.legend(fontsize=7, loc="upper right")
    positive = [v for curves in panels.values() for *_, norms in curves for v in norms if v > 0]
    if share is not None and positive:
        # a dead gradient reaches 1e-20 or exactly 0: below NORM_FLOOR it runs off the bottom
        # rather than squash every living curve into a flat line
        share.set_ylim(bottom=max(NORM_FLOOR, min(positive)))
    if title:
        fig.suptitle(title, fontsize=10)

    ax = fig.add_subplot(grid[-1, :])
    spread = 0.8 / max(len(accuracy), 1)  # series side by side around each length
    for k, (series, points) in enumerate(accuracy.items()):
        xs = [x_labels.index(p[0]) + (k - (len(accuracy) - 1) / 2) * spread for p in points]
        means = [p[1] for p in points]
        stds = [p[2] or 0.0 for p in points]  # one seed: no spread to draw
        ax.errorbar(xs, means, yerr=stds, fmt="o", capsize=4, label=series or "all jobs")
        for x, mean, std, n in zip(xs, means, stds, (p[3] for p in points)):
            ax.annotate(f"n={n}", (x, mean + std), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xticks(range(len(x_labels)), x_labels)
    ax.set_xlim(-0.6, len(x_labels) - 0.4)
    ax.set_ylabel("test accuracy")
    ax.set_title("test accuracy: mean and std over seeds (n = seeds)", fontsize=9)
    if len(accuracy) <= LEGEND_MAX:
        ax.legend(fontsize=8)

    out_stem = Path(out_stem)
    for suffix in (".png", ".pdf"):
        _save_atomic(fig, out_stem.with_suffix(suffix))
    return fig


def _save_atomic(fig, path: Path) -> None:
    """Save via a temp file and a rename: a reader, or another job writing the same report, never
    meets a half-written image."""
    from srn_lightning.files import open_atomic

    with open_atomic(path, "wb") as f:
        fig.savefig(f, format=path.suffix[1:], dpi=120)
