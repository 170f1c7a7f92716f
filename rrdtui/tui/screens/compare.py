"""Compare marked runs: overlaid curves of any metric, the configuration keys that differ, and final
and best metrics with the difference to the first run and the relative improvement over KD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Select, Static, TabbedContent, TabPane

from rrdtui.plotting import PALETTE, Curve, Figure
from rrdtui.tui.model import (
    STATUS_STYLES,
    Series,
    config_diff,
    final_and_best,
    fmt_delta,
    fmt_num,
    new_series,
    open_store,
    paper_label,
    paper_number,
    paper_ri,
    read_increments,
    uses_tau,
    relative_improvement,
)
from rrdtui.tui.widgets.curves import CurvePlot

DEFAULT_METRIC = "val/acc"
FIRST = ("val/acc", "train/acc", "train/loss", "val/loss")
TABS = ("curves", "config", "metrics")
SKIP = ("train/lr", "teacher/val_acc")  # not worth a row in the metrics table
# plotext colour names of the palette, as Rich styles (for the legend in the header).
RICH_COLORS = {"cyan+": "bright_cyan", "orange+": "orange1", "green+": "bright_green", "magenta+": "bright_magenta",
               "blue+": "bright_blue", "yellow": "yellow", "red+": "bright_red", "gray+": "grey70", "cyan": "cyan",
               "orange": "dark_orange"}  # fmt: skip


class CompareLoaded(Message):
    def __init__(self, runs: list[dict | None], names: list[str], metric: str, points: dict, resets: set,
                 table: dict | None, error: str | None = None):  # fmt: skip
        super().__init__()
        self.runs = runs
        self.names = names
        self.metric = metric
        self.points = points
        self.resets = resets
        self.table = table
        self.error = error


def _fmt_ri(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.0f}%"


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("m", "metric", "Metric"),
        Binding("s", "smooth", "Smooth"),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
        *[Binding(str(i + 1), f"tab('{tab}')", f"{tab.capitalize()} tab", show=False) for i, tab in enumerate(TABS)],
    ]

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids = list(run_ids)
        self.runs: list[dict[str, Any]] = []
        self.names: list[str] = []
        self.metric = DEFAULT_METRIC
        self.series: dict[tuple[str, str], Series] = {}
        self.table: dict[str, dict[str, tuple]] = {}
        self.loaded = False
        self.load_count = 0
        self._polling = False
        self._pending = False
        self._diff_for: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(id="cmp-head")
        with TabbedContent(id="cmp-tabs"):
            with TabPane("1 Curves", id="curves"):
                with Vertical():
                    with Horizontal(id="metric-bar"):
                        yield Label("metric ")
                        yield Select([(DEFAULT_METRIC, DEFAULT_METRIC)], value=DEFAULT_METRIC, id="metric",
                                     compact=True, allow_blank=False)  # fmt: skip
                    yield CurvePlot(id="p-cmp")
            with TabPane("2 Config diff", id="config"):
                yield DataTable(id="cfg-diff", cursor_type="row", zebra_stripes=True)
            with TabPane("3 Metrics", id="metrics"):
                yield DataTable(id="cmp-metrics", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self._timer = self.set_interval(self.app.poll_interval, self.poll)
        self.query_one("#cmp-head", Static).update(f"comparing {len(self.run_ids)} runs: loading…")
        self.poll()

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._timer.resume()
        self.poll()

    # -- reading ------------------------------------------------------------------------------

    def poll(self) -> None:
        if self._polling:
            self._pending = True
            return
        self._polling = True
        self._pending = False
        metric = self.metric
        last = {rid: self.series[(rid, metric)].last_step for rid in self.run_ids if (rid, metric) in self.series}
        need_table = not self.loaded or any(r.get("status") in ("running", "queued") for r in self.runs)
        self._read(self.app.runs_dir, metric, last, need_table)

    @work(thread=True, exit_on_error=False, group="compare-poll")
    def _read(self, runs_dir: Path, metric: str, last: dict[str, int], need_table: bool) -> None:
        try:
            with open_store(runs_dir) as store:
                runs = [store.get_run(rid) for rid in self.run_ids]
                names = sorted({n for rid in self.run_ids for n in store.metric_names(rid)})
                points: dict[tuple[str, str], list] = {}
                resets: set[tuple[str, str]] = set()
                for rid in self.run_ids:
                    # A run not read yet is read whole (first-stage series start at negative steps).
                    p, r = read_increments(store, rid, [metric], {metric: last[rid]} if rid in last else {})
                    for name, rows in p.items():
                        points[(rid, name)] = rows
                    resets |= {(rid, name) for name in r}
                table = {rid: final_and_best(store, rid, names) for rid in self.run_ids} if need_table else None
        except Exception as exc:
            self.post_message(CompareLoaded([], [], metric, {}, set(), None, error=f"cannot read the store: {exc}"))
            return
        self.post_message(CompareLoaded(runs, names, metric, points, resets, table))

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        self._polling = False
        if message.error:
            self.notify(message.error, severity="error")
        else:
            self.runs = [r for r in message.runs if r is not None]
            gone = [rid for rid, r in zip(self.run_ids, message.runs) if r is None]
            if gone:
                self.notify(f"no longer in the store: {', '.join(gone)}", severity="warning")
                self.run_ids = [r["id"] for r in self.runs]
            for key in message.resets:
                self.series[key] = new_series()
            for key, rows in message.points.items():
                self.series.setdefault(key, new_series()).extend(rows)
            if message.names != self.names:
                self.names = message.names
                self._set_metric_options()
            if message.table is not None:
                self.table = message.table
                self._draw_metrics()
            if self._diff_for != self.run_ids:
                self._draw_diff()
            self._draw_head()
            if message.points or message.resets or not self.loaded or message.metric == self.metric:
                self._draw_curves()
            self.loaded = True
            self.load_count += 1
        if self._pending:
            self.poll()

    # -- drawing ------------------------------------------------------------------------------

    def _config(self, run: dict[str, Any]) -> dict[str, Any]:
        try:
            return json.loads(run.get("config") or "{}")
        except ValueError:
            return {}

    def _draw_head(self) -> None:
        text = Text(f"comparing {len(self.runs)} runs  ", style="bold")
        for i, run in enumerate(self.runs):
            status = run.get("status") or ""
            text.append("● ", style=RICH_COLORS.get(PALETTE[i % len(PALETTE)], ""))
            text.append(f"{run['id']} ")
            text.append(run.get("name") or "", style="bold")
            text.append(f" {status}", style=STATUS_STYLES.get(status) or "dim")
            text.append("   ")
        self.query_one("#cmp-head", Static).update(text)

    def _set_metric_options(self) -> None:
        select = self.query_one("#metric", Select)
        names = list(self.names) or [DEFAULT_METRIC]
        if self.metric not in names:
            names.insert(0, self.metric)
        ordered = [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]
        with self.prevent(Select.Changed):
            select.set_options([(n, n) for n in ordered])
            select.value = self.metric

    def _draw_curves(self) -> None:
        curves = []
        for i, run in enumerate(self.runs):
            s = self.series.get((run["id"], self.metric))
            label = f"{run['id']} {run.get('name') or ''}"[:28]
            if s and s.values:
                curves.append(Curve(label, s.epochs, s.values, PALETTE[i % len(PALETTE)]))
        self.query_one("#p-cmp", CurvePlot).show(Figure(curves=curves, title=self.metric))

    def _draw_diff(self) -> None:
        table = self.query_one("#cfg-diff", DataTable)
        table.clear(columns=True)
        table.add_column("key", key="key")
        for run in self.runs:
            table.add_column(run["id"], key=run["id"])
        rows = config_diff([self._config(r) for r in self.runs])
        for key, values in rows:
            table.add_row(key, *[v if len(v) <= 30 else v[:29] + "…" for v in values], key=key)
        if not rows:
            table.add_row("(the configurations are identical)", *[""] * len(self.runs))
        self._diff_for = list(self.run_ids)

    def _draw_metrics(self) -> None:
        table = self.query_one("#cmp-metrics", DataTable)
        table.clear(columns=True)
        table.add_column("metric", key="metric")
        for run in self.runs:
            table.add_column(run["id"], key=run["id"])

        def add(label: str, values: list[float | None], digits: int = 2, delta: bool = True) -> None:
            cells: list[Any] = [label]
            base = values[0] if values else None
            for j, value in enumerate(values):
                text = fmt_num(value, digits)
                if delta and j > 0 and value is not None and base is not None:
                    d = round(value, digits) - round(base, digits)  # consistent with the numbers shown
                    text = Text.assemble(
                        text, " ", (fmt_delta(d, digits), "green" if d > 0 else "red" if d < 0 else "dim")
                    )
                cells.append(text)
            table.add_row(*cells)

        papers = [self._config(r).get("paper") for r in self.runs]
        methods = [r.get("method") or "" for r in self.runs]
        table.add_row("method", *methods)
        table.add_row(
            "status",
            *[Text(r.get("status") or "", style=STATUS_STYLES.get(r.get("status") or "", "")) for r in self.runs],
        )
        taus = []
        for r, m in zip(self.runs, methods):
            cm = self._config(r).get("method") or {}
            taus.append(
                f"{cm.get('tau_s'):g}/{cm.get('tau_t'):g}"
                if uses_tau(m) and cm.get("tau_s") is not None
                else "-"
            )
        table.add_row("τs/τt", *taus)

        def get(run: dict, name: str, which: int) -> float | None:
            return self.table.get(run["id"], {}).get(name, (None, None))[which]

        bests = [r["best_acc"] if r.get("best_acc") is not None else get(r, "val/acc", 1) for r in self.runs]
        add("val/acc", [get(r, "val/acc", 0) for r in self.runs])
        add("val/acc best", bests)
        add("paper", [paper_number(p, m) for p, m in zip(papers, methods)], delta=False)
        table.add_row("paper key", *[paper_label(m) if p else "-" for p, m in zip(papers, methods)])
        table.add_row("RI paper", *[_fmt_ri(paper_ri(p, m)) for p, m in zip(papers, methods)])
        ours = []
        for best, paper, method in zip(bests, papers, methods):
            ri = None
            if paper and method not in ("kd", "none"):
                kd, student = paper.get("KD"), paper.get("student")
                if isinstance(kd, (int, float)) and isinstance(student, (int, float)):
                    ri = relative_improvement(best, float(kd), float(student))
            ours.append(_fmt_ri(ri))
        table.add_row("RI ours (best)", *ours)
        rest = [n for n in FIRST[1:] if n in self.names] + [n for n in self.names if n not in FIRST and n not in SKIP]
        for name in rest:
            digits = 4 if name in ("sim/cka", "sim/relation_corr", "sim/logit_corr_diff") else 2
            add(name, [get(r, name, 0) for r in self.runs], digits)
            if name == "train/acc":
                add(f"{name} best", [get(r, name, 1) for r in self.runs], digits)

    # -- actions ------------------------------------------------------------------------------

    @on(Select.Changed, "#metric")
    def _metric_changed(self, event: Select.Changed) -> None:
        if event.value is Select.NULL or event.value == self.metric:
            return
        self.metric = str(event.value)
        self._draw_curves()
        self.poll()

    def action_metric(self) -> None:
        self.query_one(TabbedContent).active = "curves"
        select = self.query_one("#metric", Select)
        select.focus()
        select.expanded = True

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_smooth(self) -> None:
        plot = self.query_one("#p-cmp", CurvePlot)
        plot.smoothing = not plot.smoothing
        self.notify(f"smoothing {'on' if plot.smoothing else 'off'}", timeout=1.5)

    def action_refresh(self) -> None:
        self.poll()

    def action_back(self) -> None:
        self.dismiss(None)
