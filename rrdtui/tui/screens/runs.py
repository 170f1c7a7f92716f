"""The home screen: every run in the store, refreshed live; sort, filter, group, mark, open."""

from __future__ import annotations

from concurrent.futures import Future, wait
from pathlib import Path

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

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

# Left to right. Which of them show depends on the width (see STEPS).
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
# The table is laid out for the terminal's width, most important first: at 80 columns every column
# up to the name fits, the name (with the run's tags after it) shrunk to NAME_MIN if need be; wider
# terminals widen the name, to NAME_WIDTH and then whole, and add the rest in this order. A column is
# shown whole or not at all, so a number is never cut (two runs that differ only in temperature never
# look alike); only the texts of CLIPPED columns are shortened, with "…".
# (key, the most cells of content this step gives it: None = all it has)
NAME_MIN = 10
NAME_WIDTH = 16
STEPS = (
    ("mark", None), ("id", None), ("status", None), ("best", None), ("progress", None), ("method", None),
    ("tau", None), ("name", NAME_MIN), ("name", NAME_WIDTH), ("name", None), ("paper", None), ("last", None),
    ("pair", None), ("started", None),
)  # fmt: skip
CLIPPED = {"name": 40, "pair": 24}  # the most cells their texts take, however wide the terminal
CELL_PADDING = 1  # the table's blank cells on each side of a column
# Clicking a header sorts by it (where a sort applies).
HEADER_SORT = {"id": "created", "name": "name", "status": "status", "method": "method", "progress": "progress",
               "best": "best", "last": "last", "started": "created"}  # fmt: skip
FIRST_CHUNK = 100  # rows shown at once from a long first list; the rest follow in slices
FIRST_WAIT = 0.05  # seconds the first frame may wait for the newest runs (RunsScreen.on_mount)
REST_SLICE = 300
REST_DELAY = 0.03
MARK = "●"


def fit_columns(natural: dict[str, int], width: int) -> dict[str, int]:
    """The columns to show, left to right, and each one's content width, for a table `width` cells
    wide whose columns' contents are `natural` cells wide (0: an empty column, never shown)."""
    shown: dict[str, int] = {}
    free = width
    for key, most in STEPS:
        want = natural.get(key, 0) if most is None else min(natural.get(key, 0), most)
        if key not in shown:
            if want and want + 2 * CELL_PADDING <= free:
                shown[key] = want
                free -= want + 2 * CELL_PADDING
        elif want > shown[key]:
            grow = min(want - shown[key], free)
            shown[key] += grow
            free -= grow
    return {key: shown[key] for key, _ in COLUMNS if key in shown}


# A cell as the screen keeps it: (text, style) pieces, compared and measured as plain strings, and
# made into a Text only when the table gets it (a long list costs thousands of cells per read).
Cell = tuple[tuple[str, str], ...]


def _clip(text: str, width: int) -> str:
    """The text cut to `width` cells with "…" (only the texts of CLIPPED columns ever are)."""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, max(width - 1, 0)) + "…"


def _name_cell(name: tuple[str, str], tags: tuple[str, str], width: int) -> Cell:
    """A run's name and then its tags, (text, style) each, in `width` cells: the name is shortened
    first, the tags only when they would take more than half."""
    (text, style), (tag_text, tag_style) = name, tags
    if not tag_text:
        return ((_clip(text, width), style),)
    tag_room = min(cell_len(tag_text), max(width - cell_len(text) - 1, width // 2))
    return ((_clip(text, width - tag_room - 1), style), (" ", ""), (_clip(tag_text, tag_room), tag_style))


def _text(cell: Cell) -> Text:
    # Text, not a string: the table would parse every string as markup.
    if len(cell) == 1:
        return Text(cell[0][0], style=cell[0][1])
    return Text.assemble(*cell)


class RunsLoaded(Message):
    """The run list as read by a worker (or the error that stopped the read)."""

    def __init__(self, rows: list[RunRow] | None, error: str | None = None, first: bool = False):
        super().__init__()
        self.rows = rows
        self.error = error
        self.first = first  # the newest runs only: the rest is read once they are drawn


class RunTable(DataTable):
    """The run list. Home and End go to the first and the last run, cursor and view together, so the
    highlighted run is always the one enter opens (DataTable's Home and End scroll sideways, which
    this table never needs: its columns fit the width)."""

    BINDINGS = [
        Binding("home", "scroll_top", "First run", show=False),
        Binding("end", "scroll_bottom", "Last run", show=False),
    ]


class RunsScreen(Screen):
    """Runs from the store. Reads run in a thread worker; polls never overlap."""

    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("t", "notes", "Tags", show=False),  # in the hint line and ?: the footer is full at 80 columns
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
        self.complete = False  # every row of it is in the table (a long first list comes in parts)
        self._partial = False  # self.rows are the newest screenful only: the rest is being read
        self.load_count = 0
        self.error: str | None = None
        self._polling = False
        self._order: list[str] = []
        self._cells: dict[str, tuple] = {}
        self._lister = RunLister()
        self._focus_id: str | None = None
        # Per run: (the row, marked, its cells of every column, their widths), while the row is unchanged.
        self._cell_cache: dict[str, tuple[RunRow, bool, dict[str, tuple[str, str]], tuple[int, ...]]] = {}
        self._columns: dict[str, int] = {}  # the columns in the table and their content widths
        # The first reads go without the store module (see RunLister.load_quick): the newest screenful
        # (a few ms), then, once it is on the screen, the whole list (tens of ms on a big store).
        self._quick_limits = [FIRST_CHUNK, -1]
        self._generation = 0

    def compose(self) -> ComposeResult:
        yield Static(id="runs-title")
        yield Input(placeholder="filter: words (name, method, arch, tag…) or key=value (tau_s=0.07, method=rrd)", id="filter")
        table = RunTable(id="runs-table", cursor_type="row", zebra_stripes=True, cell_padding=CELL_PADDING)
        yield table
        yield Static(id="runs-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self._set_columns(fit_columns({key: cell_len(label) for key, label in COLUMNS}, self._table_width(0)))
        self.query_one("#filter").display = False
        table.focus()
        self._timer = self.set_interval(self.app.poll_interval, self.poll)
        self._update_title()
        begun = self.app.first_runs
        if begun is not None:
            # The app's read of the newest runs (a few ms, begun as the app started) is given a
            # moment to finish, so that they are in the table before its first frame, as in any
            # table filled when mounted. Waiting here lets the read have the CPU to itself; a read
            # that takes longer (a busy disk, a locked store) is taken by the first poll instead.
            wait([begun], timeout=FIRST_WAIT)
        if begun is not None and begun.done() and not begun.exception() and begun.result() is not None:
            self.app.first_runs = None
            self._quick_limits.pop(0)
            self._take(begun.result(), None, first=len(begun.result()) == FIRST_CHUNK)
        else:
            self.poll()

    def on_resize(self) -> None:
        if self.loaded:
            self._render_table()  # another width: other columns may fit

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
        limit = self._quick_limits.pop(0) if self._quick_limits else None
        begun, self.app.first_runs = self.app.first_runs, None  # the app's read of the newest runs
        self._read(self.app.runs_dir, limit, begun if limit == FIRST_CHUNK else None)

    @work(thread=True, exit_on_error=False, group="runs-poll")
    def _read(self, runs_dir: Path, limit: int | None, begun: Future | None = None) -> None:
        """Read the run list: with plain sqlite3 and at most `limit` runs (-1: all) while `limit` is
        given (or take the read `begun` already), and when that cannot be (see
        RunLister.load_quick), through the Store."""
        try:
            if limit is not None:
                rows = begun.result() if begun is not None else self._lister.load_quick(runs_dir, limit)
                if rows is not None:
                    self.post_message(RunsLoaded(rows, first=len(rows) == limit))
                    return
            with open_store(runs_dir) as store:
                rows = self._lister.load(store)
        except Exception as exc:  # shown on the status line; the next poll tries again
            self.post_message(RunsLoaded(None, f"cannot read the store: {exc}"))
            return
        self.post_message(RunsLoaded(rows))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self._polling = False
        self._take(message.rows, message.error, message.first)

    def _take(self, rows: list[RunRow] | None, error: str | None, first: bool) -> None:
        """Show a read of the run list (`first`: its newest screenful only)."""
        self.error = error
        if not first:
            self._quick_limits.clear()  # the whole list is read: the Store reads from now on
        if rows is not None:
            self.rows = rows
            ids = {r.id for r in self.rows}
            self.marked = [m for m in self.marked if m in ids]
            for gone in set(self._cell_cache) - ids:
                del self._cell_cache[gone]
            self._partial = first
            self._render_table()
            if not self.loaded:
                self.call_after_refresh(self._first_drawn)
            self.loaded = True
            self.load_count += 1
        self._update_title()
        self._update_status()

    def _first_drawn(self) -> None:
        self.drawn = True
        if self._quick_limits:
            self.poll()  # the newest runs are on the screen: now the rest

    # -- drawing ------------------------------------------------------------------------------

    def _cells_for(self, row: RunRow, now: float) -> dict[str, tuple[str, str]]:
        """A run's cells, (text, style) per column, and its tags (drawn after its name)."""
        beats_paper = row.best is not None and row.paper is not None and row.best >= row.paper
        return {
            "mark": (MARK if row.id in self.marked else " ", ""),
            "id": (row.id[:8], ""),
            "name": (row.name, ""),
            "tags": (" ".join(row.tags), "cyan"),
            "status": (row.status, STATUS_STYLES.get(row.status, "")),
            "progress": (row.progress_text(now), ""),
            "best": (fmt_num(row.best), "bold green" if beats_paper else ""),
            "last": (fmt_num(row.last), ""),
            "paper": (fmt_num(row.paper), ""),
            "method": (row.method, ""),
            "tau": (tau_text(row), ""),
            "pair": (pair_text(row), ""),
            "started": (fmt_time(row.started or row.created), ""),
        }

    def visible_rows(self) -> list[RunRow]:
        rows = sort_rows(filter_rows(self.rows, self.filter_text), self.sort_key, self.sort_reverse)
        if self.grouped:
            rows = sorted(rows, key=lambda r: r.group)  # stable: keeps the chosen order inside groups
        return rows

    def _table_width(self, rows: int) -> int:
        """Cells the columns of `rows` rows may take: the screen's width (the table spans it), less a
        vertical scrollbar's when they will not all fit in the table's height (or it is not laid out)."""
        table = self.query_one(DataTable)
        width = self.size.width or self.app.size.width
        if not table.size.height or rows + 1 > table.size.height:  # one line for the header
            width -= table.styles.scrollbar_size_vertical
        return width

    def _set_columns(self, columns: dict[str, int]) -> None:
        """Replace the table's columns (and rows): each as wide as its widest cell, given here, so the
        first frame is drawn at these widths (measuring happens later, when the table is idle)."""
        table = self.query_one(DataTable)
        table.clear(columns=True)
        labels = dict(COLUMNS)
        for key, width in columns.items():
            table.add_column(labels[key], key=key, width=width)
        self._columns = columns
        self._order = []
        self._cells = {}

    @staticmethod
    def _widths(cells: dict[str, tuple[str, str]]) -> tuple[int, ...]:
        """The cells a row's contents take, per column (the name's with the tags after it)."""
        widths = []
        for key, _ in COLUMNS:
            width = cell_len(cells[key][0])
            if key == "name" and cells["tags"][0]:
                width += 1 + cell_len(cells["tags"][0])
            widths.append(min(width, CLIPPED.get(key, width)))
        return tuple(widths)

    def _shown(self, cells: dict[str, tuple[str, str]]) -> tuple[Cell, ...]:
        """A row's cells of the columns in the table, texts clipped to their column."""
        shown = []
        for key, width in self._columns.items():
            if key == "name":
                shown.append(_name_cell(cells["name"], cells.get("tags", ("", "")), width))
            else:
                text, style = cells.get(key, ("", ""))
                shown.append(((_clip(text, width), style),))
        return tuple(shown)

    def _render_table(self) -> None:
        table = self.query_one(DataTable)
        now = self.app.clock()
        order: list[str] = []
        every: dict[str, dict[str, tuple[str, str]]] = {}
        widths: list[tuple[int, ...]] = []
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
                every[key] = {"name": (f"▸ {group}", "bold"), "status": (f"{n} run{'s' * (n != 1)}", "dim")}
            order.append(row.id)
            marked = row.id in self.marked
            cached = self._cell_cache.get(row.id)
            if cached is not None and cached[0] == row and cached[1] == marked and row.status != "running":
                every[row.id] = cached[2]  # unchanged (a running row's time left moves with the clock)
                widths.append(cached[3])
            else:
                every[row.id] = self._cells_for(row, now)
                size = self._widths(every[row.id])
                self._cell_cache[row.id] = (row, marked, every[row.id], size)
                widths.append(size)
        # Each column as wide as its widest cell (or its label), the whole set fitted to the width.
        natural = {key: max([cell_len(label), *(w[i] for w in widths)]) for i, (key, label) in enumerate(COLUMNS)}
        columns = fit_columns(natural, self._table_width(len(order)))
        cursor_key = self._cursor_key()
        if columns != self._columns:
            self._set_columns(columns)
        cells = {key: self._shown(c) for key, c in every.items()}
        shown = len(self._order)
        if order[:shown] == self._order and (shown or not order):
            # The same rows first: change the cells that changed, add what follows (the rest of the
            # list after its newest screenful) in slices.
            for key in self._order:
                old, new = self._cells.get(key), cells[key]
                if old == new:
                    continue
                for col, a, b in zip(self._columns, old or (), new):
                    if a != b:
                        table.update_cell(key, col, _text(b))  # it fits: a wider text would have changed the columns
            self._add_later(order[shown:], cells)
        else:
            if self._focus_id and self._focus_id in cells:
                cursor_key, self._focus_id = self._focus_id, None
            head, rest = order, []
            if not self._order and cursor_key is None and len(order) > FIRST_CHUNK:
                # A long first list: a screenful now, the rest after this frame is drawn.
                head, rest = order[:FIRST_CHUNK], order[FIRST_CHUNK:]
            table.clear()
            for key in head:
                table.add_row(*map(_text, cells[key]), key=key)
            if cursor_key in cells:
                table.move_cursor(row=order.index(cursor_key), animate=False)
            self._order = head
            self._cells = {k: cells[k] for k in head}
            self._add_later(rest, cells)

    def _add_later(self, rest: list[str], cells: dict[str, tuple[Cell, ...]]) -> None:
        """Rows to add after the table's, in slices after this frame (none: the table is complete)."""
        self._generation += 1  # a pending slice of an earlier list is dropped
        self.complete = not rest and not self._partial
        self._cells.update({k: cells[k] for k in self._order})
        if rest:
            generation = self._generation
            self.set_timer(REST_DELAY, lambda: self._add_rest(generation, rest, cells))

    def _add_rest(self, generation: int, rest: list[str], cells: dict[str, tuple[Cell, ...]]) -> None:
        """Add the rest of a long list in slices, letting frames through between them (the table
        measures every cell it gets: a thousand rows at once would stall the screen)."""
        if generation != self._generation:
            return  # the table changed since: a newer render adds what it needs
        table = self.query_one(DataTable)
        part, rest = rest[:REST_SLICE], rest[REST_SLICE:]
        for key in part:
            table.add_row(*map(_text, cells[key]), key=key)
        self._order = self._order + part
        self._cells.update({k: cells[k] for k in part})
        if rest:
            self.set_timer(REST_DELAY, lambda: self._add_rest(generation, rest, cells))
            return
        self.complete = not self._partial

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
        elif row is not None and row.note:
            status.update(Text(f"{row.id} note: {row.note}", style="italic"))
        elif self.marked:
            status.update(f"{len(self.marked)} marked: {' '.join(self.marked)}  (c to compare)")
        else:
            status.update("[dim]enter open · space mark · t tags · c compare · n launch · / filter · ? keys[/]")

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
        self._render_table()  # only the mark changes (cached cells for the rest)
        self.query_one(DataTable).action_cursor_down()
        self._update_status()

    def action_notes(self) -> None:
        row = self.cursor_run()
        if row is None:
            self.notify("Highlight a run first, then press t for its tags and note.", severity="warning")
            return
        self.app.edit_notes(row.id, row.tags, row.note)

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
