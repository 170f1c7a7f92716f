"""Curves drawn with plotext, for the terminal (`rrdtui plot`) and the dashboard's plot widgets.

`draw` works on any plotext-like figure (the `plotext` module or textual-plotext's `Plot`), so the
CLI and the dashboard draw the same way. No torch, no textual here.
"""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

PALETTE = ("cyan+", "orange+", "green+", "magenta+", "blue+", "yellow", "red+", "gray+", "cyan", "orange")
REF_COLORS = ("gray", "white", "gray+")
MARKER = "braille"
SMOOTH_WEIGHT = 0.8


@dataclass
class Curve:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str | None = None


@dataclass
class Ref:
    """A horizontal reference line (a teacher's accuracy, the paper's number)."""

    label: str
    y: float
    color: str | None = None


@dataclass
class Figure:
    curves: list[Curve] = field(default_factory=list)
    refs: list[Ref] = field(default_factory=list)
    title: str = ""
    xlabel: str = "epoch"
    ylabel: str = ""


def smooth(values: Sequence[float], weight: float = SMOOTH_WEIGHT) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing (the first points are not dragged to 0)."""
    out = []
    last = 0.0
    n = 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out


def finite_points(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    px, py = [], []
    for x, y in zip(xs, ys):
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
            px.append(x)
            py.append(y)
    return px, py


def downsample(xs: list[float], ys: list[float], max_points: int) -> tuple[list[float], list[float]]:
    """Keep at most about max_points points: bucket means, keeping the last point exact."""
    n = len(xs)
    if n <= max_points or max_points < 2:
        return xs, ys
    size = n / (max_points - 1)
    out_x, out_y = [], []
    start = 0
    for i in range(max_points - 1):
        end = int((i + 1) * size)
        if end <= start:
            continue
        chunk_x, chunk_y = xs[start:end], ys[start:end]
        out_x.append(sum(chunk_x) / len(chunk_x))
        out_y.append(sum(chunk_y) / len(chunk_y))
        start = end
    out_x.append(xs[-1])
    out_y.append(ys[-1])
    return out_x, out_y


def draw(plt: Any, fig: Figure, *, smoothing: bool = False, width: int = 80, color: bool = True) -> None:
    """Draw a figure on a plotext-like object (the caller sets its size and builds it)."""
    plt.clear_data()
    max_points = max(16, 2 * width)
    xmin = xmax = None
    drawn = 0
    for i, curve in enumerate(fig.curves):
        ys = smooth(curve.ys) if smoothing else list(curve.ys)
        xs, ys = finite_points(curve.xs, ys)
        if not xs:
            continue
        xs, ys = downsample(xs, ys, max_points)
        xmin = xs[0] if xmin is None else min(xmin, xs[0])
        xmax = xs[-1] if xmax is None else max(xmax, xs[-1])
        kwargs = {"marker": MARKER, "label": curve.label}
        if color:
            kwargs["color"] = curve.color or PALETTE[i % len(PALETTE)]
        plt.plot(xs, ys, **kwargs)
        drawn += 1
    if fig.refs:
        if xmin is None:
            xmin, xmax = 0.0, 1.0
        if xmax == xmin:
            xmax = xmin + 1.0
        for j, ref in enumerate(fig.refs):
            if ref.y is None or not math.isfinite(ref.y):
                continue
            kwargs = {"marker": MARKER, "label": ref.label}
            if color:
                kwargs["color"] = ref.color or REF_COLORS[j % len(REF_COLORS)]
            plt.plot([xmin, xmax], [ref.y, ref.y], **kwargs)
    title = fig.title
    if not drawn:
        title = f"{title} (no data yet)" if title else "no data yet"
    elif smoothing:
        title = f"{title} (smoothed)"
    plt.title(title)
    plt.xlabel(fig.xlabel)
    if fig.ylabel:
        plt.ylabel(fig.ylabel)


def _terminal_size(width: int | None, height: int | None) -> tuple[int, int]:
    size = shutil.get_terminal_size((100, 30))
    return width or size.columns, height or max(12, min(size.lines - 2, 30))


def plot_runs(
    store: Any,
    run_refs: list[str],
    metric: str | None,
    width: int | None = None,
    height: int | None = None,
    color: bool | None = None,
    smoothing: bool = False,
) -> str:
    """One metric of several runs overlaid (default val/acc), as a string for the terminal.

    Runs are given by id, unique id prefix or unique name (StoreError otherwise). With one run and
    an accuracy metric, the teacher's accuracy and the paper's number are drawn as reference lines.
    Raises StoreError when no run has the metric. Colours when `color` (default: stdout is a tty).
    """
    import json

    import plotext

    from rrdtui.store import StoreError
    from rrdtui.tui.model import paper_label, paper_number

    metric = metric or "val/acc"
    if color is None:
        color = sys.stdout.isatty()
    runs = [store.resolve_run(ref) for ref in run_refs]
    fig = Figure(title=metric, xlabel="epoch")
    for i, run in enumerate(runs):
        rows = store.series(run["id"], metric)
        label = f"{run['id'][:8]} {run.get('name') or ''}".strip()
        fig.curves.append(Curve(label, [r[1] for r in rows], [r[2] for r in rows], PALETTE[i % len(PALETTE)]))
    if not any(c.xs for c in fig.curves):
        names = sorted({n for run in runs for n in store.metric_names(run["id"])})
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise StoreError(f"no '{metric}' values in {', '.join(r['id'] for r in runs)} (metrics: {shown or 'none yet'})")
    if len(runs) == 1 and metric.endswith("acc"):
        run = runs[0]
        teacher = run.get("teacher_acc") or store.latest(run["id"]).get("teacher/val_acc")
        if teacher is not None and run.get("method") != "none":
            fig.refs.append(Ref(f"teacher {teacher:.2f}", teacher))
        try:
            paper = json.loads(run.get("config") or "{}").get("paper")
        except ValueError:
            paper = None
        number = paper_number(paper, run.get("method"))
        if number is not None:
            fig.refs.append(Ref(f"paper {paper_label(run.get('method'))} {number:.2f}", number))
    w, h = _terminal_size(width, height)
    plotext.clear_figure()
    plotext.plotsize(w, h)
    if not color:
        plotext.theme("clear")
    draw(plotext, fig, width=w, color=color, smoothing=smoothing)
    text = plotext.build()
    plotext.clear_figure()
    return text if color else plotext.uncolorize(text)
