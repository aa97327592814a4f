"""Every figure the project draws, at its default size: no text drawn over another or off the
figure, numbers on numeric axes, the seed count said once. What is drawn is what the renderer is
asked to draw, recorded as it draws; the boxes are the renderer's own, so the check does not rest
on the layout code it checks."""

import re

import numpy as np
import pytest

from srn_lightning import plots, report_jobs, report_summary
from tests.test_report import make_job


def drawn_texts(fig) -> list:
    """(text, box in pixels) of every piece of text the renderer draws for `fig`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    seen: dict = {}
    draw_text = renderer.draw_text

    def record(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and s.strip():
            seen[id(mtext)] = mtext
        return draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    renderer.draw_text = record
    fig.draw(renderer)
    return [(t.get_text(), t.get_window_extent(renderer)) for t in seen.values()]


def clashes(fig) -> list[str]:
    """Texts that overlap another (by more than a pixel each way) or leave the figure."""
    texts = drawn_texts(fig)
    assert texts, "nothing drawn"
    page = fig.bbox
    out = []
    for i, (a, box_a) in enumerate(texts):
        if box_a.x0 < page.x0 - 1 or box_a.y0 < page.y0 - 1 or box_a.x1 > page.x1 + 1 or box_a.y1 > page.y1 + 1:
            out.append(f"{a!r} leaves the figure")
        for b, box_b in texts[i + 1:]:
            w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if w > 1 and h > 1:
                out.append(f"{a!r} overlaps {b!r}")
    return out


def book_columns(steps=250):
    """Grad-norm columns shaped like the book's run: a spike at step 1, then death to 0."""
    s = np.arange(steps)
    w = np.where(s == 1, 1273.0, 30.0 * np.exp(-s / 20.0))
    w[-3:] = 0.0
    cols = {"step": s.tolist(), "epoch": (s // 5).tolist(), "loss": [1.0] * steps}
    for name, scale in (("W", 1.0), ("U", 0.95), ("b", 0.17), ("total", 1.4)):
        cols[f"{name}_pre"] = (w * scale).tolist()
        cols[f"{name}_post"] = (w * scale).tolist()
    return cols


def flow_columns(steps=250, length=20):
    s = np.arange(steps)
    flow = {"step": s.tolist(), "epoch": (s // 5).tolist(),
            "sigma_max_U": np.where(s == 0, 1.92, 194.0).tolist()}
    for t in range(1, length + 1):
        flow[f"h_{t}"] = np.where(s > steps - 5, 0.0, 10.0 ** (-(length - t) * s / steps)).tolist()
    return flow


def test_the_book_figure_and_the_grad_time_figure_have_no_clashing_text():
    title = "srn, clip=norm_each 5.0, length=20, lr=0.2, seed=0"
    assert clashes(plots.grad_norms_figure(book_columns(), 40, title)) == []
    assert clashes(plots.grad_time_figure(flow_columns(), book_columns(), title)) == []


def test_a_too_tight_figure_is_caught():
    """The check itself: two texts drawn on each other are found."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.text(0.5, 0.5, "gradient")
    fig.text(0.52, 0.5, "exploded")
    assert clashes(fig) == ["'gradient' overlaps 'exploded'"]


def sweep(tmp_path, clips, lengths, seeds, lr=None):
    num = 0
    for clip in clips:
        for length in lengths:
            for seed in seeds:
                for value in lr or [None]:
                    overrides = [f"clip={clip}", f"length={length}", f"seed={seed}"]
                    metrics = {"test_acc": 0.1 + 0.01 * seed + 0.002 * length, "lr": 0.2}
                    if value is not None:
                        overrides.insert(2, f"lr={value}")
                        metrics["lr"] = value
                    make_job(tmp_path, num, overrides, metrics)
                    num += 1
    rows = [report_jobs.read_job(n, d, tmp_path) for n, d in report_jobs.find_jobs(tmp_path)]
    return report_summary.figure_data(rows)


@pytest.mark.parametrize("clips, lengths", [(["none", "norm"], [10, 20]),
                                            (["none", "norm", "value", "norm_each"], [10, 15, 20, 25, 30, 35])])
def test_the_sweep_figure_has_no_clashing_text_and_length_on_a_numeric_axis(tmp_path, clips, lengths):
    data = sweep(tmp_path, clips, lengths, seeds=[0, 1, 2])
    assert data["x_key"] == "length"
    fig = plots.sweep_figure(**data, title=f"sweep {tmp_path.name}")
    assert clashes(fig) == []
    acc = fig.axes[-1]
    assert acc.get_xscale() == "linear" and acc.get_xlabel() == "length"
    assert len(acc.containers) == len(clips)  # a series (errorbar) per clip mode
    for bars in acc.containers:
        assert list(bars.lines[0].get_xdata()) == lengths  # the lengths themselves, not the places of labels
    (left, right), (low, high) = acc.get_xlim(), acc.get_ylim()
    assert left < lengths[0] and lengths[-1] < right  # every point in view
    assert all(low < y < high for bars in acc.containers for y in bars.lines[0].get_ydata())
    # the x axis is a number line: the gaps between lengths on screen are proportional to theirs
    xs = acc.transData.transform([(n, 0) for n in lengths])[:, 0]
    gaps = np.diff(xs) / np.diff(lengths)
    assert np.allclose(gaps, gaps[0])
    texts = [t for t, _ in drawn_texts(fig)]
    assert not [t for t in texts if re.search(r"\bn\s*=\s*\d", t)]  # no count on a point
    assert len([t for t in texts if "3 seeds" in t]) == 1  # said once


def test_a_learning_rate_sweep_puts_lr_on_a_log_axis(tmp_path):
    lrs = [0.001, 0.01, 0.1, 1.0]
    data = sweep(tmp_path, ["norm"], [20], seeds=[0, 1], lr=lrs)
    assert data["x_key"] == "lr"
    fig = plots.sweep_figure(**data)
    assert clashes(fig) == []
    acc = fig.axes[-1]
    assert acc.get_xscale() == "log" and acc.get_xlabel() == "lr"
    (bars,) = acc.containers
    line = bars.lines[0]
    assert list(line.get_xdata()) == lrs
    assert [float(t.get_text()) for t in acc.get_xticklabels()] == lrs
    means = [(0.14 + 0.15) / 2] * 4  # 0.1 + 0.01 seed + 0.002 length, seeds 0 and 1, length 20
    assert list(line.get_ydata()) == pytest.approx(means)
    (left, right), (low, high) = acc.get_xlim(), acc.get_ylim()
    assert left < lrs[0] and lrs[-1] < right and low < means[0] < high


def test_a_setting_has_one_colour_in_the_panels_and_in_the_accuracy_panel(tmp_path):
    from matplotlib.colors import to_hex

    num = 0
    for model, acc in (("srn", 0.8), ("lstm", 0.5)):  # srn first: the order of the jobs
        for length in (10, 20):
            make_job(tmp_path, num, [f"model={model}", "clip=none", f"length={length}", "seed=0"],
                     {"test_acc": acc})
            num += 1
    rows = [report_jobs.read_job(n, d, tmp_path) for n, d in report_jobs.find_jobs(tmp_path)]
    fig = plots.sweep_figure(**report_summary.figure_data(rows))
    *panels, acc = fig.axes
    in_panels = {line.get_label(): to_hex(line.get_color()) for ax in panels for line in ax.get_lines()
                 if not line.get_label().startswith("_")}
    in_accuracy = {bars.get_label(): to_hex(bars.lines[0].get_color()) for bars in acc.containers}
    assert set(in_panels) == {"model=srn", "model=lstm"}
    assert in_accuracy == in_panels
    assert acc.get_title() == "test accuracy (1 seed)"
    assert clashes(fig) == []
