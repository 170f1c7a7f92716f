"""The home screen: every run in the store, refreshed live; sort, filter, group, mark, open."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.widgets.data_table import ColumnKey

from rrdtui.tui.model import (
    STATUS_STYLES,
    RunLister,
    RunRow,
    filter_rows,
    fmt_num,
    fmt_time,
    open_store,
    pair_text,
    sort_rows,
    tau_text,
)

# Numbers before descriptions: at 80 columns the first eight fit; the rest scroll (id, name stay).
COLUMNS = (
    ("mark", " "),
    ("id", "id"),
    ("name", "name"),
    ("status", "status"),
    ("progress", "progress"),
    ("best", "best"),
    ("last", "last"),
    ("paper", "paper"),
    ("method", "method"),
    ("tau", "τs/τt"),
    ("pair", "T→S"),
    ("started", "started"),
)
# Clicking a header sorts by it (where a sort applies).
HEADER_SORT = {"id": "created", "name": "name", "status": "status", "method": "method", "progress": "progress",
               "best": "best", "last": "last", "started": "created"}  # fmt: skip
NAME_WIDTH = 16
PAIR_WIDTH = 24
FIRST_CHUNK = 100  # rows shown at once from a long first list; the rest follow in slices
REST_SLICE = 300
REST_DELAY = 0.03
MARK = "●"


class RunsLoaded(Message):
    """The run list as read by a worker (or the error that stopped the read)."""

    def __init__(self, rows: list[RunRow] | None, error: str | None = None):
        super().__init__()
        self.rows = rows
        self.error = error


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class RunsScreen(Screen):
    """Runs from the store. Reads run in a thread worker; polls never overlap."""

    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("n", "launch", "Launch"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse sort", show=False),
        Binding("g", "group", "Group"),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[RunRow] = []
        self.marked: list[str] = []
        self.sort_key = "created"
        self.sort_reverse = True
        self.grouped = False
        self.filter_text = ""
        self.loaded = False  # the first read is in the table
        self.drawn = False  # ... and on the screen (for the benchmark)
        self.complete = False  # every row of it is in the table (a long first list comes in two parts)
        self.load_count = 0
        self.error: str | None = None
        self._polling = False
        self._order: list[str] = []
        self._cells: dict[str, tuple] = {}
        self._lister = RunLister()
        self._focus_id: str | None = None
        self._cell_cache: dict[str, tuple[RunRow, bool, tuple]] = {}
        self._quick_done = False  # the first read goes without the store module (see RunLister.load_quick)
        self._generation = 0
        self._rest_pending = False

    def compose(self) -> ComposeResult:
        yield Static(id="runs-title")
        yield Input(placeholder="filter: words to match (id, name, method, arch, status, preset)", id="filter")
        table: DataTable = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True, fixed_columns=3)
        yield table
        yield Static(id="runs-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.query_one("#filter").display = False
        table.focus()
        self._timer = self.set_interval(self.app.poll_interval, self.poll)
        self._update_title()
        self.poll()

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._timer.resume()
        self.poll()

    # -- reading ------------------------------------------------------------------------------

    def poll(self) -> None:
        if self._polling:
            return
        self._polling = True
        self._read(self.app.runs_dir)

    @work(thread=True, exit_on_error=False, group="runs-poll")
    def _read(self, runs_dir: Path) -> None:
        try:
            if not self._quick_done:
                self._quick_done = True
                rows = self._lister.load_quick(runs_dir)
                if rows is not None:
                    self.post_message(RunsLoaded(rows))
                    return
            with open_store(runs_dir) as store:
                rows = self._lister.load(store)
        except Exception as exc:  # shown on the status line; the next poll tries again
            self.post_message(RunsLoaded(None, f"cannot read the store: {exc}"))
            return
        self.post_message(RunsLoaded(rows))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self._polling = False
        self.error = message.error
        if message.rows is not None:
            self.rows = message.rows
            ids = {r.id for r in self.rows}
            self.marked = [m for m in self.marked if m in ids]
            for gone in set(self._cell_cache) - ids:
                del self._cell_cache[gone]
            self._render_table()
            if not self.loaded:
                self.call_after_refresh(self._first_drawn)
            self.loaded = True
            self.load_count += 1
        self._update_title()
        self._update_status()

    def _first_drawn(self) -> None:
        self.drawn = True

    # -- drawing ------------------------------------------------------------------------------

    def _cells_for(self, row: RunRow, now: float) -> tuple:
        # Text cells, not strings: the table would parse every string as markup.
        beats_paper = row.best is not None and row.paper is not None and row.best >= row.paper
        return (
            Text(MARK if row.id in self.marked else " "),
            Text(row.id[:8]),
            Text(_clip(row.name, NAME_WIDTH)),
            Text(row.status, style=STATUS_STYLES.get(row.status, "")),
            Text(row.progress_text(now)),
            Text(fmt_num(row.best), style="bold green" if beats_paper else ""),
            Text(fmt_num(row.last)),
            Text(fmt_num(row.paper)),
            Text(row.method),
            Text(tau_text(row)),
            Text(_clip(pair_text(row), PAIR_WIDTH)),
            Text(fmt_time(row.started or row.created)),
        )

    def visible_rows(self) -> list[RunRow]:
        rows = sort_rows(filter_rows(self.rows, self.filter_text), self.sort_key, self.sort_reverse)
        if self.grouped:
            rows = sorted(rows, key=lambda r: r.group)  # stable: keeps the chosen order inside groups
        return rows

    def _render_table(self) -> None:
        table = self.query_one(DataTable)
        now = self.app.clock()
        order: list[str] = []
        cells: dict[str, tuple] = {}
        group = None
        rows = self.visible_rows()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.group] = counts.get(row.group, 0) + 1
        for row in rows:
            if self.grouped and row.group != group:
                group = row.group
                key = f"group:{group}"
                order.append(key)
                n = counts[group]
                cells[key] = (Text(""), Text(""), Text(f"▸ {_clip(group, NAME_WIDTH - 2)}", style="bold"),
                              Text(f"{n} run{'s' * (n != 1)}", style="dim")) + (Text(""),) * (len(COLUMNS) - 4)  # fmt: skip
            order.append(row.id)
            marked = row.id in self.marked
            cached = self._cell_cache.get(row.id)
            if cached is not None and cached[0] == row and cached[1] == marked and row.status != "running":
                cells[row.id] = cached[2]  # unchanged (a running row's time left moves with the clock)
            else:
                cells[row.id] = self._cells_for(row, now)
                self._cell_cache[row.id] = (row, marked, cells[row.id])
        if order == self._order:
            for key, new in cells.items():
                old = self._cells.get(key)
                if old == new:
                    continue
                for (col, _), a, b in zip(COLUMNS, old or (), new):
                    if a != b:
                        # Widening the column costs a pass over the table: only when the text needs it.
                        wider = b.cell_len > table.columns[ColumnKey(col)].content_width
                        table.update_cell(key, col, b, update_width=wider)
            self.complete = not self._rest_pending
        else:
            self._generation += 1
            cursor_key = self._cursor_key()
            if self._focus_id and self._focus_id in cells:
                cursor_key, self._focus_id = self._focus_id, None
            head, rest = order, []
            if not self._order and cursor_key is None and len(order) > FIRST_CHUNK:
                # A long first list: a screenful now, the rest after this frame is drawn.
                head, rest = order[:FIRST_CHUNK], order[FIRST_CHUNK:]
            table.clear()
            for key in head:
                table.add_row(*cells[key], key=key)
            if cursor_key in cells:
                table.move_cursor(row=order.index(cursor_key), animate=False)
            self.complete = not rest
            self._rest_pending = bool(rest)
            if rest:
                all_cells, generation = cells, self._generation
                self.set_timer(REST_DELAY, lambda: self._add_rest(generation, rest, all_cells))
                order = head
                cells = {k: cells[k] for k in head}
        self._order = order
        self._cells = cells

    def _add_rest(self, generation: int, rest: list[str], cells: dict[str, tuple]) -> None:
        """Add the rest of a long first list in slices, letting frames through between them (the
        table measures every cell it gets: a thousand rows at once would stall the screen)."""
        if generation != self._generation:
            return  # a newer rebuild has drawn everything
        table = self.query_one(DataTable)
        part, rest = rest[:REST_SLICE], rest[REST_SLICE:]
        for key in part:
            table.add_row(*cells[key], key=key)
        self._order = self._order + part
        self._cells.update({k: cells[k] for k in part})
        if rest:
            self.set_timer(REST_DELAY, lambda: self._add_rest(generation, rest, cells))
            return
        self.complete = True
        self._rest_pending = False

    def _cursor_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._order or table.cursor_row is None or table.cursor_row >= len(self._order):
            return None
        return self._order[table.cursor_row]

    def cursor_run(self) -> RunRow | None:
        key = self._cursor_key()
        if key is None or key.startswith("group:"):
            return None
        return next((r for r in self.rows if r.id == key), None)

    def _update_title(self) -> None:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        parts = [f"[b]rrdtui[/b]  {len(self.rows)} runs"]
        for status in ("running", "queued", "crashed", "diverged", "failed"):
            if counts.get(status):
                style = STATUS_STYLES.get(status) or ""
                parts.append(f"[{style}]{counts[status]} {status}[/]" if style else f"{counts[status]} {status}")
        arrow = "↓" if self.sort_reverse else "↑"
        extra = f"sort {self.sort_key}{arrow}" + ("  grouped" if self.grouped else "")
        if self.filter_text:
            extra += f"  filter '{self.filter_text}'"
        self.query_one("#runs-title", Static).update(" · ".join(parts) + f"   [dim]{extra}[/]")

    def _update_status(self) -> None:
        status = self.query_one("#runs-status", Static)
        if self.error:
            status.update(Text(self.error, style="bold red"))
            return
        if self.loaded and not self.rows:
            status.update("No runs yet: press n to launch one from a preset (? for keys).")
            return
        row = self.cursor_run()
        if row is not None and row.error and row.status in ("crashed", "failed", "diverged"):
            status.update(Text(f"{row.id} {row.status}: {row.error}", style="red"))
        elif self.marked:
            status.update(f"{len(self.marked)} marked: {' '.join(self.marked)}  (c to compare)")
        else:
            status.update("[dim]enter open · space mark · c compare · n launch · / filter · ? keys[/]")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_status()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = HEADER_SORT.get(str(event.column_key.value))
        if key is None:
            return
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, key in ("created", "best", "last", "progress")
        self._resort()

    # -- actions ------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.poll()

    def action_open(self) -> None:
        row = self.cursor_run()
        if row is not None:
            self.open_run(row.id)

    def open_run(self, run_id: str) -> None:
        from rrdtui.tui.screens.detail import DetailScreen

        self.app.push_screen(DetailScreen(run_id), callback=lambda _: self.poll())

    def action_mark(self) -> None:
        row = self.cursor_run()
        if row is None:
            return
        if row.id in self.marked:
            self.marked.remove(row.id)
        else:
            self.marked.append(row.id)
        table = self.query_one(DataTable)
        mark = Text(MARK if row.id in self.marked else " ")
        table.update_cell(row.id, "mark", mark)
        if row.id in self._cells:
            self._cells[row.id] = (mark,) + self._cells[row.id][1:]
            self._cell_cache[row.id] = (row, row.id in self.marked, self._cells[row.id])
        table.action_cursor_down()
        self._update_status()

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify("Mark two or more runs with space, then press c.", severity="warning")
            return
        from rrdtui.tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(list(self.marked)))

    def action_launch(self) -> None:
        from rrdtui.tui.screens.launch import LaunchScreen

        def launched(ids: list[str] | None) -> None:
            if ids:
                self._focus_id = ids[-1]
                self.poll()

        self.app.push_screen(LaunchScreen(), callback=launched)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.query_one(DataTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._render_table()
        self._update_title()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.query_one(DataTable).focus()

    def action_sort(self) -> None:
        keys = ("created", "name", "status", "method", "best", "last", "progress")
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.sort_reverse = self.sort_key in ("created", "best", "last", "progress")
        self._resort()

    def action_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._resort()

    def action_group(self) -> None:
        self.grouped = not self.grouped
        self._resort()

    def _resort(self) -> None:
        self._render_table()
        self._update_title()
