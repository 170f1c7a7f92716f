"""A plotext plot of named curves with reference lines, redrawn from data the screen keeps."""

from __future__ import annotations

from rich.text import Text
from textual.app import RenderResult
from textual.reactive import reactive
from textual_plotext import PlotextPlot

from rrdtui.plotting import Figure, draw


class CurvePlot(PlotextPlot):
    """Shows a `Figure`; the screen replaces it (cheap) and the plot is drawn when rendered.

    Curves hold references to the screen's growing lists, so a redraw needs no copy and no read.
    """

    smoothing: reactive[bool] = reactive(False)

    def __init__(self, title: str = "", ylabel: str = "", *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.figure = Figure(title=title, ylabel=ylabel)

    def show(self, figure: Figure) -> None:
        self.figure = figure
        self.refresh()

    def watch_smoothing(self) -> None:
        self.refresh()

    def render(self) -> RenderResult:
        width, height = self.size
        if width < 20 or height < 5:
            return Text(f"{self.figure.title}: too small to plot", style="dim")
        try:
            draw(self.plt, self.figure, smoothing=self.smoothing, width=width)
            return super().render()
        except Exception as exc:  # plotext dislikes a few degenerate inputs; never take the app down
            return Text(f"{self.figure.title}: cannot plot ({exc})", style="red")
