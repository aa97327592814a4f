"""Figures. Pure functions: data in, files out; no training state. matplotlib is imported lazily
and without pyplot, so importing this module costs nothing and no GUI backend is ever touched."""

from __future__ import annotations

from pathlib import Path

# The book's figure: W solid, U dash-dot, b dashed, in its three colours.
STYLES = {"W": ("-", "#8E004D"), "U": ("-.", "#E20079"), "b": ("--", "#3D3D3F")}


def preload() -> None:
    """Imports what drawing uses (matplotlib's figure, its Agg and PDF backends, its images), so that
    processes forked after it draw without importing it each."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.backends.backend_pdf  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import matplotlib.image  # noqa: F401


def plot_grad_norms(columns: dict, out_stem, keep_steps: int | None = None, title: str = ""):
    """`grad_norms_figure` as `<out_stem>.png` and `.pdf`; returns the PNG's pixels, RGBA
    [height, width, 4]."""
    return _save_png_pdf(grad_norms_figure(columns, keep_steps, title), out_stem)


def grad_norms_figure(columns: dict, keep_steps: int | None = None, title: str = ""):
    """The book's figure: the pre-clip L2 gradient norm of W, U and b (`columns["W_pre"]`, ...)
    against `columns["step"]`, the first `keep_steps` steps (all if None)."""
    from matplotlib.figure import Figure

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
    return fig


def plot_grad_time(flow: dict, norms: dict, out_stem, title: str = ""):
    """`grad_time_figure` as `<out_stem>.png` and `.pdf`; returns the PNG's pixels, RGBA
    [height, width, 4]."""
    return _save_png_pdf(grad_time_figure(flow, norms, title), out_stem)


def grad_time_figure(flow: dict, norms: dict, title: str = ""):
    """How the gradient flows back through time, from the grad-time columns (`flow`: `step`,
    `sigma_max_U`, `h_1` .. `h_T`) and the grad-norm columns (`norms`, for the step of W's peak).
    Left: a heatmap, x the step, y the position t, colour log10 ||dL/dh_t|| (black: exactly 0, no
    gradient at all); positions 1 and 2 hold the two digits the label depends on. Middle: the
    profile g_t / g_T against t at the first step, at the step of W's peak pre-clip norm and at the
    last step. Right: the spectral norm of U against the step, with the line at 1 (below it the
    gradient must vanish; above it, it may explode)."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    steps = np.asarray(flow["step"])
    h = np.array([flow[c] for c in flow if c.startswith("h_")])  # [T, steps]
    length = len(h)
    # The panels at fixed places in inches, no layout engine: constrained layout would be a third
    # of the figure's cost in every run (benchmarks/README.md, "Figures").
    width, height = 13.0, 4.2
    fig = Figure(figsize=(width, height), dpi=110)
    bottom, top = 0.55, height - (0.65 if title else 0.4)
    # left edge and width of each: the heatmap, its colour bar, the profile, sigma (between them
    # the room for the tick labels and axis labels on their left)
    places = [(0.75, 3.95), (4.8, 0.18), (6.75, 2.6), (10.25, 2.6)]
    heat, bar, profile, sigma = (fig.add_axes((x / width, bottom / height, w / width, (top - bottom) / height))
                                 for x, w in places)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(h)
    cmap = colormaps["viridis"].with_extremes(bad="black")
    shown = np.ma.masked_invalid(np.where(h > 0, logs, np.nan))
    half = (steps[1] - steps[0]) / 2 if len(steps) > 1 else 0.5  # the rows: every step, or every k-th
    image = heat.imshow(shown, aspect="auto", origin="lower", cmap=cmap, interpolation="nearest",
                        extent=(steps[0] - half, steps[-1] + half, 0.5, length + 0.5))
    fig.colorbar(image, cax=bar, label="log10 ||dL/dh_t||  (black: exactly 0)")
    heat.axhline(2.5, color="white", lw=0.8, ls="--")
    heat.set_yticks(sorted({1, 2, length, *range(5, length + 1, 5)}))
    heat.set_xlabel("step")
    heat.set_ylabel("position t (1, 2: the digits to add)")
    heat.set_title("gradient reaching each position", fontsize=9)

    peak = int(np.nanargmax(np.where(np.isfinite(norms["W_pre"]), norms["W_pre"], np.nan)))
    at_peak = max(0, int(np.searchsorted(steps, norms["step"][peak], side="right")) - 1)  # its row or the one before
    positions = np.arange(1, length + 1)
    recorded = "" if steps[at_peak] == norms["step"][peak] else f", recorded at {steps[at_peak]}"
    for label, i in (("first step", 0), (f"W's peak (step {norms['step'][peak]}{recorded})", at_peak),
                     ("last step", len(steps) - 1)):
        g = h[:, min(i, h.shape[1] - 1)]
        if g[-1] > 0:
            zeros = int((g == 0).sum())
            label += f" (exactly 0 at {zeros} of {length})" if zeros else ""
            profile.plot(positions, np.where(g > 0, g / g[-1], np.nan), marker=".", label=label)
    profile.axvspan(0.5, 2.5, color="0.85", zorder=0)
    profile.set_yscale("log")
    profile.set_xlabel("position t")
    profile.set_ylabel("g_t / g_T")
    profile.set_title("profile through time (grey: the digits to add)", fontsize=9)
    profile.legend(fontsize=8)

    sigma.plot(steps, flow["sigma_max_U"], color="#8E004D")
    sigma.axhline(1.0, color="0.3", ls="--", lw=1)
    sigma.set_yscale("log")
    sigma.set_xlabel("step")
    sigma.set_ylabel("sigma_max(U)")
    sigma.set_title("largest singular value of U (line: 1)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    return fig


def _save_png_pdf(fig, out_stem):
    """`<out_stem>.png` and `.pdf` of `fig`; returns the PNG's pixels, RGBA [height, width, 4]. The
    figure is rasterised once: the PNG and the pixels (TensorBoard's image) are that drawing, and
    the PDF reuses the layout it found (a layout engine's is solved once)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imsave

    from srn_lightning.files import open_atomic

    out_stem = Path(out_stem)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba()).copy()
    _save_atomic(out_stem.with_suffix(".png"), lambda f: imsave(f, pixels, format="png"))
    fig.set_layout_engine("none")
    _save_atomic(out_stem.with_suffix(".pdf"), lambda f: fig.savefig(f, format="pdf"))
    return pixels


NORM_FLOOR = 1e-6  # lowest norm the sweep figure shows
LEGEND_MAX = 10  # more labels than this (a search's trials) make a legend that hides the plot
BAND_OVER = 5  # a setting with more seeds than this is drawn as its median and a band, not a line each
THIN_OVER = 12  # a panel with more lines than this draws them thin and light


def _draw_curves(ax, curves: list) -> dict:
    """One panel's (label, steps, norms) curves; curves that share a label (the seeds of a setting)
    share a colour. Up to BAND_OVER of them are a line each; more are their median over the seeds
    with the band of the middle half (25th to 75th percentile), which stays readable at any number
    of seeds where a line each would be a solid block. More than LEGEND_MAX labels (a search's
    trials) are one median and band over all the curves. Returns {label: colour}."""
    groups: dict = {}
    for label, steps, norms in curves:
        groups.setdefault(label, []).append((steps, norms))
    # more settings than a legend can name (a search's trials): one median and band over all the jobs
    merged = len(groups) > LEGEND_MAX
    if merged:
        groups = {"": [curve for group in groups.values() for curve in group]}
    lines = sum(1 if len(g) > BAND_OVER else len(g) for g in groups.values())
    lw, alpha = (0.6, 0.5) if lines > THIN_OVER else (1.0, 0.8)
    colors = {}
    for k, (label, group) in enumerate(groups.items()):
        color = colors[label] = f"C{k % 10}"
        if len(group) > BAND_OVER:
            steps, median, low, high = median_band(group)
            ax.fill_between(steps, low, high, color=color, alpha=0.25, lw=0)
            ax.plot(steps, median, color=color, lw=1.2,
                    label=f"{label + ': ' if label else ''}median, 25-75% of {len(group)} "
                          f"{'jobs' if merged else 'seeds'}")
            continue
        for n, (steps, norms) in enumerate(group):
            ax.plot(steps, norms, color=color, lw=lw, alpha=alpha, label=label if n == 0 and label else None)
    return colors


def median_band(curves: list) -> tuple:
    """(steps, median, 25th, 75th percentile) at each step over the curves [(steps, values), ...]
    that reach it; NaN (a non-finite norm) is left out, and a step no curve has a number for is NaN."""
    import warnings

    import numpy as np

    steps = sorted({s for st, _ in curves for s in st})
    where = {s: i for i, s in enumerate(steps)}
    table = np.full((len(curves), len(steps)), np.nan)
    for row, (st, values) in enumerate(curves):
        table[row, [where[s] for s in st]] = values
    with warnings.catch_warnings():  # a step where every curve is NaN: NaN, as it should be
        warnings.simplefilter("ignore", RuntimeWarning)
        low, median, high = np.nanpercentile(table, [25, 50, 75], axis=0)
    return steps, median, low, high


def plot_sweep(panels: dict, rows: list, cols: list, accuracy: dict, x_key: str, out_stem,
               title: str = ""):
    """`sweep_figure` as `<out_stem>.png` and `.pdf`; returns the figure."""
    fig = sweep_figure(panels, rows, cols, accuracy, x_key, title)
    out_stem = Path(out_stem)
    for suffix in (".png", ".pdf"):
        _save_atomic(out_stem.with_suffix(suffix), lambda f: fig.savefig(f, format=suffix[1:], dpi=120))
    return fig


def sweep_figure(panels: dict, rows: list, cols: list, accuracy: dict, x_key: str, title: str = ""):
    """The sweep figure. Top: a grid of panels, one per (row, col) = (length, clip), each with the
    pre-clip gradient norm of W of every job in it against the step, log y; `panels[(row, col)]` is a list
    of (label, steps, norms), the same label (the seeds of one setting) drawn in the same colour.
    Bottom: test accuracy against the number `x_key` (length, lr, ...) on a numeric axis,
    `accuracy[series] = [(x, mean, std, n), ...]`, mean with a std error bar; how many seeds the
    points rest on is said once, in the panel's title. With more than LEGEND_MAX series (a search's
    trials), small points in one colour, the best starred and named."""
    from matplotlib.figure import Figure

    # Fixed margins in inches, no layout engine: the report is redrawn while a sweep runs,
    # and constrained layout would double the cost of each drawing.
    width, height = 3.0 * max(len(cols), 2) + 1.0, 2.2 * len(rows) + 3.6
    fig = Figure(figsize=(width, height))
    top = 0.7 if title else 0.45  # inches above the panels: the figure's title, then theirs
    grid = fig.add_gridspec(
        len(rows) + 1, len(cols), height_ratios=[2.2] * len(rows) + [2.4], hspace=0.5, wspace=0.12,
        left=0.8 / width, right=1 - 0.2 / width, top=1 - top / height, bottom=0.55 / height,
    )
    share = None
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            ax = share = fig.add_subplot(grid[i, j], sharex=share, sharey=share)
            colors = _draw_curves(ax, panels.get((row, col), []))
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
            if ax.get_legend_handles_labels()[1] and len(colors) <= LEGEND_MAX:
                ax.legend(fontsize=7, loc="upper right")
    positive = [v for curves in panels.values() for *_, norms in curves for v in norms if v > 0]
    if share is not None and positive:
        # a dead gradient reaches 1e-20 or exactly 0: below NORM_FLOOR it runs off the bottom
        # rather than squash every living curve into a flat line
        share.set_ylim(bottom=max(NORM_FLOOR, min(positive)))
    if title:  # at a fixed height in inches, above the panels' titles at any number of rows
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height, va="top")
    _draw_accuracy(fig.add_subplot(grid[-1, :]), accuracy, x_key)
    return fig


def _draw_accuracy(ax, accuracy: dict, x_key: str) -> None:
    """Test accuracy against `x_key`: a line and error bars per series, each nudged a few points
    sideways so that the bars of series at the same x stay apart; the x values are the data's own."""
    from matplotlib.transforms import offset_copy

    many = len(accuracy) > LEGEND_MAX  # a search's trials: small points in one colour, the best named
    xs_all = sorted({p[0] for points in accuracy.values() for p in points})
    seeds = sorted({p[3] for points in accuracy.values() for p in points})
    best: dict = {}  # x -> (mean, x, series) of the best point there
    count: dict = {}  # x -> points there
    for k, (series, points) in enumerate(accuracy.items()):  # in the panels' order: their colours
        xs, means = [p[0] for p in points], [p[1] for p in points]
        stds = [p[2] or 0.0 for p in points]  # one seed: no spread to draw
        line = "o-" if len(points) > 1 else "o"  # a series over x: accuracy against x
        for p in points:
            count[p[0]] = count.get(p[0], 0) + 1
            if p[0] not in best or p[1] > best[p[0]][0]:
                best[p[0]] = (p[1], p[0], series)
        if many:
            ax.errorbar(xs, means, yerr=stds, fmt=line, color="C0", ms=3, lw=0.5, alpha=0.5)
            continue
        nudge = offset_copy(ax.transData, fig=ax.figure, units="points",
                            x=(k - (len(accuracy) - 1) / 2) * 4.0)
        ax.errorbar(xs, means, yerr=stds, fmt=line, capsize=4, transform=nudge,
                    label=series or "all jobs")
        # drawn through the nudge, the bars are left out of the axes' data limits: put them in
        ax.update_datalim([(x, m + sign * s) for x, m, s in zip(xs, means, stds) for sign in (-1, 1)])
    ax.autoscale_view()
    if max(count.values(), default=0) == 1:  # x is what the trials vary: the best of them all
        best = dict([max(best.items(), key=lambda kv: kv[1][0])]) if best else {}
    for mean, x, series in best.values() if many else ():  # the best at each x
        ax.plot([x], [mean], "*", color="C3", ms=12)
        ax.annotate(f"best: {series} ({mean:.3g})", (x, mean), textcoords="offset points",
                    xytext=(8, -4), fontsize=7, color="C3")
    _numeric_axis(ax, xs_all)
    ax.set_xlabel(x_key)
    ax.set_ylabel("test accuracy")
    if not seeds:  # no job has tested yet (still running, or every one stopped before its test)
        ax.set_title("test accuracy: no job tested yet", fontsize=9)
        return
    over = (f"{seeds[0]} seed{'s' if seeds[0] != 1 else ''}" if len(seeds) == 1
            else f"{seeds[0]} to {seeds[-1]} seeds")
    if many:
        ax.set_title(f"test accuracy of {len(accuracy)} settings (each over {over}), the best starred",
                     fontsize=9)
    else:
        ax.set_title("test accuracy (1 seed)" if seeds == [1] else
                     f"test accuracy: mean and std over {over}", fontsize=9)
    if not many and ax.get_legend_handles_labels()[0]:  # none: no job tested
        ax.legend(fontsize=8)


def _numeric_axis(ax, xs: list) -> None:
    """The x axis for the values `xs`: linear; log where they are positive and span a factor of 20
    or more (learning rates); symmetric-log where 0 is one of them and the others span decades
    (weight decay 0, 0.01, 0.1, 1). A tick at each value when there are few."""
    positive = [x for x in xs if x > 0]
    if positive and len(positive) == len(xs) and max(xs) / min(xs) >= 20:
        ax.set_xscale("log")
    elif positive and len(positive) == len(xs) - 1 and min(xs) == 0 and max(positive) / min(positive) >= 20:
        ax.set_xscale("symlog", linthresh=min(positive))
    if 0 < len(xs) <= 8:
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    if len(xs) == 1:  # one value: room on both sides of it
        ax.set_xlim(xs[0] - max(1, abs(xs[0]) / 2), xs[0] + max(1, abs(xs[0]) / 2))


def _save_atomic(path: Path, save) -> None:
    """`save(file)` into a temp file renamed to `path`: a reader, or another job writing the same
    report, never meets a half-written image. Every figure file of the project is written here."""
    from srn_lightning.files import open_atomic

    with open_atomic(path, "wb") as f:
        save(f)
