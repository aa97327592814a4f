"""Figures. Pure functions: data in, files out; no training state. matplotlib is imported lazily
and without pyplot, so importing this module costs nothing and no GUI backend is ever touched."""

from __future__ import annotations

from pathlib import Path

# The book's figure: W solid, U dash-dot, b dashed, in its three colours.
STYLES = {"W": ("-", "#8E004D"), "U": ("-.", "#E20079"), "b": ("--", "#3D3D3F")}


def plot_grad_norms(steps, norms: dict, out_stem, keep_steps: int | None = None, title: str = ""):
    """Plot the L2 gradient norm of W, U and b against the step, as the book does, keeping the first
    `keep_steps` steps (all if None). Writes `<out_stem>.png` and `.pdf`; returns the Figure."""
    from matplotlib.figure import Figure

    n = len(steps) if keep_steps is None else min(keep_steps, len(steps))
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for name, (style, color) in STYLES.items():
        ax.plot(steps[:n], norms[name][:n], style, color=color, label=f"{name}_grad_l2")
    ax.set_xlabel("step")
    ax.set_ylabel("L2 norm")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    out_stem = Path(out_stem)
    fig.savefig(out_stem.with_suffix(".png"), dpi=120)
    # Constrained layout is most of a draw's cost: the PDF reuses the layout the PNG's draw found.
    fig.set_layout_engine("none")
    fig.savefig(out_stem.with_suffix(".pdf"), dpi=120)
    return fig
