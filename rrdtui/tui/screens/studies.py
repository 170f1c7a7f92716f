"""Studies: each study's progress and runner, its seed groups (mean ± std over seeds), a heatmap of the
final accuracy over a 2-key grid, and the mean ± std curves of chosen groups. A group's runs open into
the run detail; `x` stops a study (after a question).

Reads run in a thread worker (one Store per read) and post one message; only the handler touches
widgets. Polls never overlap: a change asked for while one is in flight (another study, another
selection) polls again when it lands. The table and curves are recomputed only when the study's runs
or their accuracy rows changed (a cheap signature), and widgets are updated in place: no flicker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane, Tabs
from textual_plotext import PlotextPlot

from rrdtui.studies.table import Group, Matrix, StudyTable, fmt_value, short_key
from rrdtui.tui.model import STATUS_STYLES, fmt_num, open_store

TABS = ("table", "heat", "curves")
TAB_NAMES = {"table": "Table", "heat": "Heatmap", "curves": "Curves"}
METRICS = ("val/acc", "test/acc")  # the curves drawn (test/acc only where the study's runs have it)
FAILED = ("failed", "crashed", "diverged")
ACTIVE = ("running", "queued")
MARK = "●"
CELL_PADDING = 1
LABEL_MIN = 12
# Curve colours: the mean in the bright shade, the ± std lines in the plain one (plotext names), and
# the same bright shade as a Rich colour for the legend under the plots.
COLORS = (("cyan+", "cyan", "color(14)"), ("orange+", "orange", "color(11)"), ("green+", "green", "color(10)"),
          ("magenta+", "magenta", "color(13)"), ("blue+", "blue", "color(12)"), ("red+", "red", "color(9)"))  # fmt: skip
BAND_MARKER = "braille"  # the ± std lines: thin
MEAN_MARKER = "hd"  # the mean: solid (half blocks, in every terminal font)
# The heatmap's colour scale, low to high (viridis).
SCALE = ((0x44, 0x01, 0x54), (0x3B, 0x52, 0x8B), (0x21, 0x91, 0x8C), (0x5E, 0xC9, 0x62), (0xFD, 0xE7, 0x25))
EMPTY_CELL = Style(color="grey50", bgcolor="grey19")


# ---------------------------------------------------------------------------------------------
# What a read brings (plain data, built in the worker)
# ---------------------------------------------------------------------------------------------


@dataclass
class StudyRow:
    """One study in the list: its runs by status and its runner."""

    name: str
    file: str
    counts: dict[str, int]
    runner: str  # alive, stopping, gone (active runs, no runner), ended, none (never started)
    stop_requested: bool

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, *statuses: str) -> int:
        return sum(self.counts.get(s, 0) for s in statuses)

    @property
    def stoppable(self) -> bool:
        return self.runner in ("alive", "stopping") or self.count(*ACTIVE) > 0


def runner_state(study: dict[str, Any], alive: bool, counts: dict[str, int]) -> str:
    if alive:
        return "stopping" if study.get("stop_requested") else "alive"
    if any(counts.get(s) for s in ACTIVE):
        return "gone"
    return "ended" if study.get("started") or study.get("pid") else "none"


@dataclass
class Curves:
    """(epoch, mean, std) per metric of one selected group."""

    label: str
    series: dict[str, list[tuple[float, float, float | None]]] = field(default_factory=dict)
    seeds: int = 0


class StudiesLoaded(Message):
    def __init__(self, studies: list[StudyRow] | None, study: str | None, table: StudyTable | None,
                 curves: dict[str, Curves] | None, signature: Any, error: str | None = None):  # fmt: skip
        super().__init__()
        self.studies = studies
        self.study = study  # the study the table is of
        self.table = table  # None: unchanged since the last read (or no study)
        self.curves = curves
        self.signature = signature
        self.error = error


class StopDone(Message):
    def __init__(self, study: str, info: str | None, error: str | None):
        super().__init__()
        self.study = study
        self.info = info
        self.error = error


def _signature(store: Any, name: str, rows: list[dict[str, Any]]) -> tuple:
    """What the table and curves depend on: the runs (status, progress) and their accuracy rows."""
    cursor = store.db.execute(
        "SELECT COUNT(*), MAX(step), SUM(value) FROM metrics WHERE name IN ('val/acc', 'test/acc') AND run_id IN "
        "(SELECT id FROM runs WHERE study = ?)",
        [name],
    )
    metrics = tuple(cursor.fetchone())
    runs = tuple((r["id"], r["status"], r.get("step"), r.get("epoch"), r.get("best_acc")) for r in rows)
    return runs, metrics


# ---------------------------------------------------------------------------------------------
# Drawing helpers (pure)
# ---------------------------------------------------------------------------------------------


def _same(a: tuple[Text, ...] | None, b: tuple[Text, ...]) -> bool:
    """Rich's Text equality ignores the base style: compare it too."""
    if a is None or len(a) != len(b):
        return False
    return all(x.plain == y.plain and str(x.style) == str(y.style) and x.spans == y.spans for x, y in zip(a, b))


def _fit(text: Text, width: int) -> Text:
    if text.cell_len <= width:
        return text
    text = text.copy()
    text.truncate(width, overflow="ellipsis")
    return text


class TableSync:
    """A DataTable kept in step with rows of Text cells: columns replaced only when they change,
    cells updated in place while the rows are the same, the cursor kept on its row otherwise."""

    def __init__(self, table: DataTable):
        self.table = table
        self.columns: dict[str, tuple[str, int]] = {}
        self.order: list[str] = []
        self.cells: dict[str, tuple[Text, ...]] = {}

    def cursor_key(self) -> str | None:
        row = self.table.cursor_row
        if not self.order or row is None or not 0 <= row < len(self.order):
            return None
        return self.order[row]

    def show(self, columns: dict[str, tuple[str, int]], rows: dict[str, tuple[Text, ...]]) -> None:
        table = self.table
        cursor_key = self.cursor_key()
        if columns != self.columns:
            table.clear(columns=True)
            for key, (label, width) in columns.items():
                table.add_column(Text(label, justify="left" if key in LEFT else "right"), key=key, width=width)
            self.columns, self.order, self.cells = dict(columns), [], {}
        order = list(rows)
        if order == self.order:
            for key, new in rows.items():
                old = self.cells.get(key)
                if _same(old, new):
                    continue
                for col, a, b in zip(columns, old or (), new):
                    if not _same((a,), (b,)):
                        table.update_cell(key, col, b)
        else:
            table.clear()
            for key in order:
                table.add_row(*rows[key], key=key)
            if cursor_key in rows:
                table.move_cursor(row=order.index(cursor_key), animate=False)
        self.order = order
        self.cells = dict(rows)


def study_cells(row: StudyRow) -> dict[str, Text]:
    def n(count: int, style: str = "") -> Text:
        return Text(str(count), style=style if count else "dim", justify="right")

    runner_style = {"alive": "bold green", "stopping": "yellow", "gone": "bold red"}.get(row.runner, "dim")
    return {
        "study": Text(row.name, style="bold"),
        "done": Text(f"{row.count('completed')}/{row.total}", justify="right"),
        "running": n(row.count("running"), STATUS_STYLES["running"]),
        "queued": n(row.count("queued")),
        "failed": n(row.count(*FAILED), "bold red"),
        "stopped": n(row.count("stopped"), "yellow"),
        "runner": Text(row.runner, style=runner_style),
    }


STUDY_COLUMNS = {"study": "study", "done": "done", "running": "running", "queued": "queued", "failed": "failed",
                 "stopped": "stopped", "runner": "runner"}  # fmt: skip


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f"±{std:.2f}" if std is not None else "")


def group_cells(group: Group, marked: bool) -> dict[str, Text]:
    n_text = str(group.n) if group.n == len(group.runs) else f"{group.n}/{len(group.runs)}"
    diff = group.paper_diff
    return {
        "mark": Text(MARK if marked else " ", style="bold cyan"),
        "group": Text(group.label),
        "n": Text(n_text, style="" if group.n == len(group.runs) else "yellow", justify="right"),
        "final": Text(_pm(group.final.mean, group.final.std), style="bold", justify="right"),
        "best": Text(fmt_num(group.best.mean), justify="right"),
        "paper": Text(fmt_num(group.paper), justify="right"),
        "diff": Text("-" if diff is None else f"{diff:+.2f}", justify="right",
                     style="" if diff is None else "green" if diff >= 0 else "red"),
        "teacher": Text(fmt_num(group.teacher_acc), justify="right"),
        "ri": Text(fmt_num(group.ri), justify="right"),
    }


GROUP_COLUMNS = {"mark": " ", "group": "group", "n": "N", "final": "final ± std", "best": "best", "paper": "paper",
                 "diff": "Δpaper", "teacher": "teacher", "ri": "RI"}  # fmt: skip
OPTIONAL = ("paper", "diff", "teacher", "ri")  # shown when some group has a value
LEFT = ("mark", "group", "study", "runner")  # the text columns; numbers are right-aligned
DROP_ORDER = ("teacher", "ri", "best", "paper", "diff")  # left out first when the width is short


def fit_group_columns(natural: dict[str, int], width: int) -> dict[str, int]:
    """The group table's columns and content widths for `width` cells: every number whole; the label
    takes what is left (at least LABEL_MIN, clipped with "…"); optional columns go first if short."""
    keys = [k for k in GROUP_COLUMNS if natural.get(k)]
    label = natural.get("group", 0)

    def others(ks: list[str]) -> int:
        return sum(natural[k] + 2 * CELL_PADDING for k in ks if k != "group")

    for key in DROP_ORDER:
        if others(keys) + LABEL_MIN + 2 * CELL_PADDING <= width:
            break
        if key in keys:
            keys.remove(key)
    room = width - others(keys) - 2 * CELL_PADDING
    widths = {k: natural[k] for k in keys}
    widths["group"] = max(min(label, room), min(label, LABEL_MIN))
    return {k: widths[k] for k in GROUP_COLUMNS if k in widths}


def _lerp(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def heat_style(t: float) -> Style:
    """The cell style for a value at `t` in [0, 1] of the scale, with a legible text colour."""
    t = min(max(t, 0.0), 1.0) * (len(SCALE) - 1)
    i = min(int(t), len(SCALE) - 2)
    r, g, b = _lerp(SCALE[i], SCALE[i + 1], t - i)
    light = 0.299 * r + 0.587 * g + 0.114 * b > 140
    return Style(color="black" if light else "white", bgcolor=f"#{r:02x}{g:02x}{b:02x}", bold=True)


def heatmap_text(matrix: Matrix) -> Text:
    """The matrix of final means as coloured tiles (mean, and ± std or n below), every number whole."""
    keys = [matrix.row_key, matrix.col_key]
    row_name, col_name = short_key(matrix.row_key, keys), short_key(matrix.col_key, keys)
    values = [g.final.mean for row in matrix.cells for g in row if g is not None and g.final.mean is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
    best = hi if values else None

    def lines(g: Group | None) -> tuple[str, str]:
        if g is None:
            return "", ""
        if g.final.mean is None:
            return "-", f"0/{len(g.runs)}"
        second = f"±{g.final.std:.2f}" if g.final.std is not None else f"n={g.n}"
        return f"{g.final.mean:.2f}", second

    tiles = [[lines(g) for g in row] for row in matrix.cells]
    cols = [fmt_value(c) for c in matrix.cols]
    rows = [fmt_value(r) for r in matrix.rows]
    width = max(8, *(len(s) + 2 for row in tiles for tile in row for s in tile), *(len(c) + 2 for c in cols))
    corner = f"{row_name} ↓"
    head = max(len(corner), *(len(r) for r in rows))
    out = Text()
    out.append(" " * (head + 1) + f"{col_name} →\n", style="bold")
    out.append(corner.rjust(head) + " ", style="bold")
    for c in cols:
        out.append(c.center(width) + " ", style="bold")
    out.append("\n")
    for r, row, cells in zip(rows, tiles, matrix.cells):
        for k in (0, 1):
            out.append((r if k == 0 else "").rjust(head) + " ", style="bold")
            for tile, g in zip(row, cells):
                mean = g.final.mean if g is not None else None
                if mean is None:
                    style = EMPTY_CELL
                else:
                    style = heat_style((mean - lo) / (hi - lo) if hi > lo else 1.0)
                    if k == 0 and mean == best:
                        style += Style(underline=True)
                out.append(tile[k].center(width), style=style)
                out.append(" ")
            out.append("\n")
    out.append("\nfinal accuracy, mean over completed seeds; ± std (n: fewer than two)\n", style="dim")
    if values:
        out.append("colour ", style="dim")
        out.append(f"{lo:.2f} ")
        for i in range(10):
            out.append("  ", style=Style(bgcolor=heat_style(i / 9).bgcolor))
        out.append(f" {hi:.2f}")
        out.append("  best underlined", style="dim")
    return out


# ---------------------------------------------------------------------------------------------
# Widgets
# ---------------------------------------------------------------------------------------------


class BandPlot(PlotextPlot):
    """Mean curves with ± one standard deviation as dotted lines in the same hue, per group."""

    def __init__(self, title: str, *, id: str | None = None):
        super().__init__(id=id)
        self.title = title
        self.groups: list[tuple[int, list[tuple[float, float, float | None]]]] = []  # (colour, points)

    def show(self, groups: list[tuple[int, list[tuple[float, float, float | None]]]]) -> None:
        self.groups = groups
        self.refresh()

    def render(self) -> RenderResult:
        width, height = self.size
        if width < 20 or height < 5:
            return Text(f"{self.title}: too small to plot", style="dim")
        try:
            self._draw()
            return super().render()
        except Exception as exc:  # plotext dislikes a few degenerate inputs; never take the app down
            return Text(f"{self.title}: cannot plot ({exc})", style="red")

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        drawn = 0
        for color, points in self.groups:
            if not points:
                continue
            bright, plain, _ = COLORS[color % len(COLORS)]
            xs = [p[0] for p in points]
            if any(p[2] is not None for p in points):
                spread = [(x, m, s or 0.0) for x, m, s in points]
                plt.plot(xs, [m + s for _, m, s in spread], marker=BAND_MARKER, color=plain)
                plt.plot(xs, [m - s for _, m, s in spread], marker=BAND_MARKER, color=plain)
            plt.plot(xs, [p[1] for p in points], marker=MEAN_MARKER, color=bright)
            drawn += 1
        plt.title(self.title if drawn else f"{self.title} (no data yet)")
        plt.xlabel("epoch")


class GroupRunsScreen(ModalScreen[str | None]):
    """A seed group's runs; enter opens one in the run detail."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("enter", "pick", "Open", show=False)]

    def __init__(self, title: str, group: Group):
        super().__init__()
        self.title_text = title
        self.group = group

    def compose(self) -> ComposeResult:
        with Vertical(id="group-runs-box"):
            yield Static(self.title_text, id="group-runs-title")
            yield DataTable(id="group-runs", cursor_type="row", zebra_stripes=True)
            yield Static("[dim]enter open the run · escape close[/]", id="group-runs-hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in (("id", "run"), ("seed", "seed"), ("status", "status"), ("epochs", "epochs"),
                           ("final", "final"), ("best", "best")):  # fmt: skip
            table.add_column(label, key=key)
        for run in self.group.runs:
            table.add_row(
                Text(run.id), Text("-" if run.seed is None else str(run.seed)),
                Text(run.status, style=STATUS_STYLES.get(run.status, "")), Text(str(run.epochs)),
                Text(fmt_num(run.final)), Text(fmt_num(run.best)), key=run.id,
            )  # fmt: skip
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.dismiss(str(event.row_key.value))

    def action_pick(self) -> None:
        table = self.query_one(DataTable)
        if self.group.runs and table.cursor_row is not None:
            self.dismiss(self.group.runs[table.cursor_row].id)

    def action_close(self) -> None:
        self.dismiss(None)


# ---------------------------------------------------------------------------------------------
# The screen
# ---------------------------------------------------------------------------------------------


class StudiesScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("enter", "open", "Runs"),
        Binding("space", "select", "Select"),
        Binding("x", "stop", "Stop study"),
        *[Binding(str(i + 1), f"tab('{tab}')", f"{TAB_NAMES[tab]} tab", show=False) for i, tab in enumerate(TABS)],
        Binding("ctrl+r", "refresh", "Refresh", show=False),
    ]

    def __init__(self, study: str | None = None) -> None:
        super().__init__()
        self.studies: list[StudyRow] = []
        self.study: str | None = study  # the study whose table is shown
        self.table: StudyTable | None = None  # ... as last read
        self.curves: dict[str, Curves] = {}
        self.selected: dict[str, list[str]] = {}  # per study: the keys of the groups chosen for the curves
        self.loaded = False
        self.load_count = 0
        self.error: str | None = None
        self._polling = False
        self._again = False
        self._signature: Any = None
        self._heat_shown: str | None = None
        self._curves_shown: Any = None

    def compose(self) -> ComposeResult:
        yield Static(id="studies-title")
        yield DataTable(id="studies", cursor_type="row", cell_padding=CELL_PADDING)
        with TabbedContent(id="study-tabs"):
            with TabPane("1 Table", id="table"):
                yield DataTable(id="groups", cursor_type="row", zebra_stripes=True, cell_padding=CELL_PADDING)
            with TabPane("2 Heatmap", id="heat"):
                with ScrollableContainer(id="heat-scroll"):
                    yield Static(id="heatmap")
            with TabPane("3 Curves", id="curves"):
                with Vertical():
                    with Horizontal(id="curve-plots"):
                        yield BandPlot("val/acc %: mean ± std", id="c-val")
                        yield BandPlot("test/acc %: mean ± std", id="c-test")
                    yield Static(id="curve-legend")
        yield Static(id="studies-status")
        yield Footer()

    def on_mount(self) -> None:
        self._studies_sync = TableSync(self.query_one("#studies", DataTable))
        self._groups_sync = TableSync(self.query_one("#groups", DataTable))
        self.query_one("#c-test").display = False
        self.query_one("#studies", DataTable).focus()
        self._timer = self.set_interval(self.app.poll_interval, self.poll)
        self._update_title()
        self._update_status()
        self.poll()

    def on_resize(self) -> None:
        if self.table is not None:
            self._draw_groups()

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._timer.resume()
        self.poll()

    # -- reading ------------------------------------------------------------------------------

    def poll(self, force: bool = False) -> None:
        """Read the store, unless a read is in flight: then read again once it lands."""
        if force:
            self._signature = None
        if self._polling:
            self._again = self._again or force
            return
        self._polling = True
        selected = tuple(self.selected.get(self.study or "", ()))
        self._read(self.app.runs_dir, self.study, selected, self._signature)

    @work(thread=True, exit_on_error=False, group="studies-poll")
    def _read(self, runs_dir: Path, study: str | None, selected: tuple[str, ...], last: Any) -> None:
        try:
            from rrdtui.studies.table import group_curves, study_table

            with open_store(runs_dir) as store:
                rows: list[StudyRow] = []
                members: dict[str, list[dict[str, Any]]] = {}
                for record in store.list_studies():
                    runs = store.study_runs(record["name"])
                    members[record["name"]] = runs
                    counts: dict[str, int] = {}
                    for run in runs:
                        counts[run["status"]] = counts.get(run["status"], 0) + 1
                    alive = store.study_runner_alive(record)
                    rows.append(StudyRow(record["name"], record.get("file") or "", counts,
                                         runner_state(record, alive, counts), bool(record.get("stop_requested"))))  # fmt: skip
                if study not in members:
                    study = rows[0].name if rows else None
                if study is None:
                    self.post_message(StudiesLoaded(rows, None, None, None, None))
                    return
                signature = (study, selected, _signature(store, study, members[study]))
                if signature == last:
                    self.post_message(StudiesLoaded(rows, study, None, None, signature))
                    return
                table = study_table(store, study)
                curves: dict[str, Curves] = {}
                for group in table.groups:
                    if group.key in selected:
                        entry = curves[group.key] = Curves(group.label, seeds=len(group.runs))
                        for metric in METRICS:
                            points = group_curves(store, group, metric)
                            if points:
                                entry.series[metric] = points
        except Exception as exc:  # shown on the status line; the next poll tries again
            self.post_message(StudiesLoaded(None, study, None, None, None, f"cannot read the store: {exc}"))
            return
        self.post_message(StudiesLoaded(rows, study, table, curves, signature))

    def on_studies_loaded(self, message: StudiesLoaded) -> None:
        self._polling = False
        self.error = message.error
        if message.studies is not None:
            self.studies = message.studies
            if self.study is None or self.study not in {s.name for s in self.studies}:
                self.study = message.study
            self._draw_studies()
        current = message.study == self.study
        if current and message.table is not None:
            self.table = message.table
            self.curves = message.curves or {}
            self._signature = message.signature
            keys = {g.key for g in self.table.groups}
            if self.study in self.selected:
                self.selected[self.study] = [k for k in self.selected[self.study] if k in keys]
            self._draw_groups()
            self._draw_heatmap()
            self._draw_curves()
        elif current and message.signature is not None:
            self._signature = message.signature
        elif self.study is None:
            self.table = None
            self._draw_groups()
            self._draw_heatmap()
            self._draw_curves()
        if message.error is None:
            self.loaded = True
            self.load_count += 1
        self._update_title()
        self._update_status()
        self.refresh_bindings()
        if self._again or (not current and message.error is None):  # another study was asked for meanwhile
            self._again = False
            self.poll()

    # -- drawing ------------------------------------------------------------------------------

    def _width(self, table: DataTable) -> int:
        return (self.size.width or self.app.size.width) - table.styles.scrollbar_size_vertical

    def _draw_studies(self) -> None:
        table = self.query_one("#studies", DataTable)
        rows = {s.name: tuple(study_cells(s).values()) for s in self.studies}
        natural = {key: max(Text(label).cell_len, *(r[i].cell_len for r in rows.values()), 0)
                   for i, (key, label) in enumerate(STUDY_COLUMNS.items())}  # fmt: skip
        others = sum(w + 2 * CELL_PADDING for k, w in natural.items() if k != "study")
        natural["study"] = max(LABEL_MIN, min(natural["study"], self._width(table) - others - 2 * CELL_PADDING))
        columns = {key: (label, natural[key]) for key, label in STUDY_COLUMNS.items()}
        rows = {k: tuple(_fit(c, natural[col]) for c, col in zip(v, STUDY_COLUMNS)) for k, v in rows.items()}
        self._studies_sync.show(columns, rows)
        if self.study in rows and self._studies_sync.cursor_key() != self.study:
            table.move_cursor(row=list(rows).index(self.study), animate=False)
        table.styles.height = min(len(rows), 5) + 1 if rows else 2

    def _draw_groups(self) -> None:
        table = self.query_one("#groups", DataTable)
        groups = self.table.groups if self.table is not None else []
        marked = set(self.selected.get(self.study or "", ()))
        every = {g.key: group_cells(g, g.key in marked) for g in groups}
        natural: dict[str, int] = {}
        for key, label in GROUP_COLUMNS.items():
            widths = [c[key].cell_len for c in every.values()]
            if key in OPTIONAL and not any(c[key].plain != "-" for c in every.values()):
                continue
            natural[key] = max(Text(label).cell_len, *widths, 0)
        fitted = fit_group_columns(natural, self._width(table))
        columns = {key: (GROUP_COLUMNS[key], width) for key, width in fitted.items()}
        rows = {k: tuple(_fit(c[col], w) for col, w in fitted.items()) for k, c in every.items()}
        self._groups_sync.show(columns, rows)

    def _draw_heatmap(self) -> None:
        heat = self.query_one("#heatmap", Static)
        table = self.table
        if table is None:
            content: Text = Text("No study selected.", style="dim")
        elif table.matrix is None:
            grid = list((table.spec or {}).get("grid") or {})
            why = f"its grid has {len(grid)} key{'s' * (len(grid) != 1)}" if grid else "it has no grid"
            content = Text(f"No heatmap for {table.name}: {why} (a heatmap needs two).", style="dim")
        else:
            content = heatmap_text(table.matrix)
        key = content.markup + repr(content.spans)
        if key != self._heat_shown:
            self._heat_shown = key
            heat.update(content)

    def _draw_curves(self) -> None:
        order = [k for k in self.selected.get(self.study or "", ()) if k in self.curves]
        shown = (self.study, tuple(order), tuple(tuple(sorted(self.curves[k].series.items())) for k in order))
        if shown == self._curves_shown:
            return
        self._curves_shown = shown
        has_test = any("test/acc" in self.curves[k].series for k in order)
        val = self.query_one("#c-val", BandPlot)
        test = self.query_one("#c-test", BandPlot)
        val.show([(i, self.curves[k].series.get("val/acc", [])) for i, k in enumerate(order)])
        test.display = has_test
        if has_test:
            test.show([(i, self.curves[k].series.get("test/acc", [])) for i, k in enumerate(order)])
        legend = self.query_one("#curve-legend", Static)
        if not order:
            legend.update(Text("Select groups with space in the table (1) to plot their mean ± std.", style="dim"))
            return
        text = Text()
        for i, key in enumerate(order):
            text.append("━━ ", style=COLORS[i % len(COLORS)][2])
            text.append(self.curves[key].label + "  ")
        text.append("thick: mean · thin: ± 1 std over seeds", style="dim")
        legend.update(text)

    def _current(self) -> StudyRow | None:
        return next((s for s in self.studies if s.name == self.study), None)

    def _update_title(self) -> None:
        title = self.query_one("#studies-title", Static)
        n = len(self.studies)
        text = Text.assemble(("rrdtui · studies", "bold"), f"  {n} stud{'ies' if n != 1 else 'y'}")
        table = self.table
        if table is not None and table.name == self.study:
            grid = list((table.spec or {}).get("grid") or {})
            seeds = (table.spec or {}).get("seeds") or []
            parts = [f"{len(table.groups)} group{'s' if len(table.groups) != 1 else ''}"]
            if grid:
                parts.append(" × ".join(short_key(k, grid) for k in grid))
            if seeds:
                parts.append(f"{len(seeds)} seeds")
            text.append(f" · {self.study}: " + ", ".join(parts), style="")
        title.update(text)

    def _update_status(self) -> None:
        status = self.query_one("#studies-status", Static)
        if self.error:
            status.update(Text(self.error, style="bold red"))
        elif self.loaded and not self.studies:
            status.update("No studies yet: `rrdtui study presets/studies/demo.yaml` runs one (escape: back).")
        else:
            status.update("[dim]↑↓ study · tab groups · space select · enter runs · x stop · 1 2 3 views[/]")

    # -- events and actions -------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "studies":
            return
        name = self._studies_sync.cursor_key()  # where the cursor is now (the event may be stale)
        if name is not None and name != self.study and name in {s.name for s in self.studies}:
            self.study = name
            self.table = None
            self._draw_groups()
            self.poll(force=True)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "studies":
            self.action_tab("table")
        elif event.data_table.id == "groups":
            self.action_open()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            current = self._current()
            return True if current is not None and current.stoppable else None
        return True

    def action_back(self) -> None:
        self._timer.stop()
        self.dismiss(None)

    def action_refresh(self) -> None:
        self.poll(force=True)

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "table":
            self.query_one("#groups", DataTable).focus()
        elif tab == "heat":
            self.query_one("#heat-scroll").focus()
        else:
            self.query_one(TabbedContent).query_one(Tabs).focus()

    def cursor_group(self) -> Group | None:
        if self.table is None or self.table.name != self.study:
            return None
        key = self._groups_sync.cursor_key()
        return next((g for g in self.table.groups if g.key == key), None)

    def action_select(self) -> None:
        group = self.cursor_group()
        if group is None or self.study is None:
            return
        chosen = self.selected.setdefault(self.study, [])
        if group.key in chosen:
            chosen.remove(group.key)
        else:
            chosen.append(group.key)
        self._draw_groups()
        self.query_one("#groups", DataTable).action_cursor_down()
        self.poll(force=True)  # the curves of the new selection

    def action_open(self) -> None:
        if self.focused is self.query_one("#studies", DataTable):
            self.action_tab("table")
            return
        group = self.cursor_group()
        if group is None or not group.runs:
            return
        if len(group.runs) == 1:
            self.open_run(group.runs[0].id)
            return
        title = f"[b]{self.study}[/b] · {group.label}: {len(group.runs)} runs"

        def picked(run_id: str | None) -> None:
            if run_id:
                self.open_run(run_id)

        self.app.push_screen(GroupRunsScreen(title, group), callback=picked)

    def open_run(self, run_id: str) -> None:
        from rrdtui.tui.screens.detail import DetailScreen

        self.app.push_screen(DetailScreen(run_id))

    def action_stop(self) -> None:
        current = self._current()
        if current is None:
            return
        from rrdtui.tui.screens.confirm import ConfirmScreen

        active = current.count(*ACTIVE)
        question = (
            f"Stop study {current.name}? Its runner starts no more runs, its {current.count('queued')} queued "
            f"run(s) are cancelled and its {current.count('running')} running run(s) stop cleanly with a "
            f"checkpoint." if active else f"Stop study {current.name}? Its runner starts no more runs."
        )

        def answered(ok: bool | None) -> None:
            if ok:
                self._stop(current.name, self.app.runs_dir)

        self.app.push_screen(ConfirmScreen(question, "Stop"), callback=answered)

    @work(thread=True, exit_on_error=False, group="studies-action")
    def _stop(self, name: str, runs_dir: Path) -> None:
        try:
            from rrdtui.studies.runner import stop_study

            with open_store(runs_dir) as store:
                stopped = stop_study(store, name)
        except Exception as exc:
            self.post_message(StopDone(name, None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            return
        if stopped:
            shown = " ".join(stopped[:6]) + (" …" if len(stopped) > 6 else "")
            info = f"study {name}: stop requested for {len(stopped)} run{'s' * (len(stopped) != 1)} ({shown})"
        else:
            info = f"study {name}: stop requested (no run was queued or running)"
        self.post_message(StopDone(name, info, None))

    def on_stop_done(self, message: StopDone) -> None:
        if message.error:
            self.notify(f"stop {message.study} failed: {message.error}", severity="error", timeout=8)
            return
        self.notify(message.info or f"stopped {message.study}")
        self.poll(force=True)
