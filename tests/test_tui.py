"""The dashboard, driven through Textual's Pilot at 80x24 on a store filled through Store."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable, Input, OptionList, Select, TabbedContent
from textual.worker import WorkerState

from rrdtui import launcher
from rrdtui.config import ConfigError, load_preset
from rrdtui.store import Store
from rrdtui.tui.app import RRDApp
from rrdtui.tui.screens.compare import CompareScreen
from rrdtui.tui.screens.confirm import ConfirmScreen
from rrdtui.tui.screens.detail import DetailScreen
from rrdtui.tui.screens.help import HelpScreen
from rrdtui.tui.screens.launch import LaunchScreen
from rrdtui.tui.screens.runs import RunsScreen
from rrdtui.tui.widgets.curves import CurvePlot
from rrdtui.tui.widgets.wraplog import WrapLog
from tests.tui_fixtures import FIXED_NOW, PRESETS, make_store, release_run, wait_for, widget_lines, write_presets

ROOT = Path(__file__).resolve().parents[1]
SIZE = (80, 24)

pytestmark = pytest.mark.usefixtures("utc")  # dates render the same anywhere


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    make_store(tmp_path / "runs")
    return tmp_path / "runs"


@pytest.fixture
def presets_dir(tmp_path: Path) -> Path:
    write_presets(tmp_path / "presets")
    return tmp_path / "presets"


@pytest.fixture
def app(runs_dir: Path, presets_dir: Path) -> RRDApp:
    return RRDApp(runs_dir, presets_dir, clock=lambda: FIXED_NOW, poll_interval=0.2)


async def runs_ready(pilot) -> RunsScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen) and pilot.app.screen.loaded)
    return pilot.app.screen


def text_of(widget) -> str:
    """The plain text a Static shows (strings, Rich Text or any Rich renderable)."""
    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.export_text()


def cell(screen: RunsScreen, run_id: str, column: str) -> str:
    value = screen.query_one(DataTable).get_cell(run_id, column)
    return getattr(value, "plain", str(value))


async def open_detail(pilot, run_id: str) -> DetailScreen:
    screen = await runs_ready(pilot)
    table = screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(run_id))
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, DetailScreen) and pilot.app.screen.loaded)
    return pilot.app.screen


def shown(app, screen_type) -> bool:
    """A screen of this type is on top and mounted (its on_mount has run): pushed is not yet shown."""
    return isinstance(app.screen, screen_type) and app.screen.is_mounted


async def show_tab(pilot, key: str, tab: str) -> None:
    """Press a tab's number key and wait until that tab is the one shown."""
    await pilot.press(key)
    await wait_for(pilot, lambda: pilot.app.screen.query_one(TabbedContent).active == tab, f"tab {tab}")


async def press_until(pilot, key: str, condition, what: str = "the key's effect") -> None:
    """Press a key and wait until its effect is there."""
    await pilot.press(key)
    await wait_for(pilot, condition, what)


def record_notes(monkeypatch, screen) -> list[str]:
    """The messages the screen notifies from now on (each still shown)."""
    notes: list[str] = []
    original = screen.notify

    def spy(message, *args, **kwargs):
        notes.append(str(message))
        return original(message, *args, **kwargs)

    monkeypatch.setattr(screen, "notify", spy)
    return notes


# ---------------------------------------------------------------------------------------------
# The rule: no torch
# ---------------------------------------------------------------------------------------------


def test_import_leaves_torch_unimported():
    code = (
        "import rrdtui.tui.app, rrdtui.tui.screens.detail, rrdtui.tui.screens.launch, "
        "rrdtui.tui.screens.compare, rrdtui.plotting, rrdtui.launcher, sys; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


async def test_runs_table_shows_the_store(app, runs_dir):
    store = Store(runs_dir)
    store.put_artifact("b0000002", "tags", ["baseline", "kd"])
    store.close()
    async with app.run_test(size=(140, 40)) as pilot:  # wide enough for every column, tags included
        screen = await runs_ready(pilot)
        table = screen.query_one(DataTable)
        assert table.row_count == 7
        assert cell(screen, "c0000003", "status") == "completed"
        assert cell(screen, "c0000003", "tau") == "0.04/0.1"
        assert cell(screen, "c0000003", "paper") == "74.48"  # config.paper["RRD"]
        assert cell(screen, "d0000004", "paper") == "75.08"  # "rrd+kd" -> "RRD+KD"
        assert cell(screen, "b0000002", "tau") == "-"  # KD has no temperatures
        assert cell(screen, "a0000001", "paper") == "-"
        assert cell(screen, "d0000004", "progress") == "18/30 47m"  # time left from the frozen clock
        assert cell(screen, "d0000004", "best") == cell(screen, "d0000004", "last")
        assert cell(screen, "e0000005", "status") == "crashed"
        assert cell(screen, "f0000006", "status") == "diverged"
        assert cell(screen, "c0000003", "pair") == "r32x4→r8x4"
        assert cell(screen, "c0000003", "started") == "06-13 15:07"
        assert cell(screen, "b0000002", "name") == "kd_r32x4_r8x4 baseline kd"  # its tags after its name
        # newest first
        assert screen._order[0] == "0a000007"


async def test_80_columns_show_whole_columns_and_every_temperature(app):
    """At 80x24 the columns that fit are drawn whole: runs that differ only in their temperatures
    show them in full, and no cell is wider than its column (nothing to scroll to)."""
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        table = screen.query_one(DataTable)
        lines = widget_lines(table)
        assert "τs/τt" in lines[0] and "status" in lines[0] and "best" in lines[0]
        for run_id, tau in (("0a000007", "0.05/0.1"), ("e0000005", "0.1/0.02"), ("c0000003", "0.04/0.1")):
            assert tau in next(line for line in lines if run_id in line)
        for key, column in table.columns.items():
            assert all(cell.cell_len <= column.width for cell in table.get_column(key)), key
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= 80


async def test_the_first_frame_of_runs_is_already_laid_out(app, monkeypatch):
    """The first frame that shows runs has each column as wide as its cells: it is the frame the
    table keeps, not one with every column cut to its header."""
    first: list[str] = []
    original = DataTable.render_lines

    def spy(self, crop):
        lines = original(self, crop)
        if self.id == "runs-table" and self.row_count and not first:
            first.extend(strip.text for strip in lines)
        return lines

    monkeypatch.setattr(DataTable, "render_lines", spy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await runs_ready(pilot)
        await wait_for(pilot, lambda: screen.drawn and first)
        assert "0.1/0.02" in "".join(first)
        assert first == widget_lines(screen.query_one(DataTable))


async def test_running_run_becomes_crashed_while_open(app, runs_dir):
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        assert cell(screen, "d0000004", "status") == "running"
        dead = subprocess.Popen(["true"])
        dead.wait()
        release_run(runs_dir, "d0000004")  # its trainer is gone: no lock, no process, an old heartbeat
        store = Store(runs_dir)
        store.update_run("d0000004", pid=dead.pid, heartbeat=time.time() - 3600)
        store.close()
        await wait_for(pilot, lambda: cell(screen, "d0000004", "status") == "crashed")
        assert "crashed" in text_of(screen.query_one("#runs-title"))


async def test_a_column_widens_when_a_value_grows(tmp_path, presets_dir):
    from tests.tui_fixtures import make_config

    store = Store(tmp_path / "one")
    run_id = store.create_run(make_config("solo", "rrd"), status="queued")
    store.close()
    app = RRDApp(tmp_path / "one", presets_dir, clock=lambda: FIXED_NOW, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        store = Store(tmp_path / "one")
        store.update_run(run_id, status="completed")
        store.close()
        await wait_for(pilot, lambda: cell(screen, run_id, "status") == "completed")
        column = screen.query_one(DataTable).columns["status"]
        await wait_for(pilot, lambda: column.content_width >= len("completed"), "the status column to widen")


async def test_polls_never_overlap(app, monkeypatch):
    """However many polls are asked for (ours and the screen's own timer), at most one read is in
    flight: the first load is held open while polls keep coming, and no second load starts."""
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        original = screen._lister.load
        lock = threading.Lock()
        in_flight = max_in_flight = finished = 0
        entered = threading.Event()  # a load is in flight (and held open)
        release = threading.Event()  # let the held load go on

        def counting_load(store):
            nonlocal in_flight, max_in_flight, finished
            with lock:
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
            entered.set()
            try:
                release.wait()  # the first load waits here; once released, every load passes straight on
                return original(store)
            finally:
                with lock:
                    in_flight -= 1
                    finished += 1

        def live_reads() -> int:
            """Read workers started and not yet done (each is in its load, or on its way there)."""
            return sum(w.group == "runs-poll" and w.state in (WorkerState.PENDING, WorkerState.RUNNING)
                       for w in app.workers)  # fmt: skip

        monkeypatch.setattr(screen._lister, "load", counting_load)
        try:
            screen.poll()  # or, if a read was in flight already, the timer's next poll
            await wait_for(pilot, entered.is_set)
            for _ in range(5):
                screen.poll()
                await pilot.pause()  # the screen's timer may poll in between too
            # Every read that was let start has reached its load (with the guard: the held one only),
            # or two are in their loads at once already.
            await wait_for(pilot, lambda: live_reads() == in_flight or in_flight > 1)
        finally:
            release.set()
        before = screen.load_count  # no yield since the release: the held read's rows are not in yet
        await wait_for(pilot, lambda: finished >= 1 and in_flight == 0 and screen.load_count > before)
        assert max_in_flight == 1


async def test_filter_sort_group(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        table = screen.query_one(DataTable)
        box = screen.query_one("#filter", Input)
        await pilot.press("slash", *"crash")
        await wait_for(pilot, lambda: screen.filter_text == "crash")
        assert table.row_count == 1 and screen._order == ["e0000005"]
        await press_until(pilot, "escape", lambda: screen.filter_text == "" and not box.display)
        assert table.row_count == 7
        await pilot.press("slash", *"rrd r8x4")
        await wait_for(pilot, lambda: screen.filter_text == "rrd r8x4")
        assert set(screen._order) == {"c0000003", "d0000004", "e0000005", "0a000007"}
        await pilot.press("enter", "escape")
        await wait_for(pilot, lambda: screen.filter_text == "" and not box.display and table.has_focus)
        await press_until(pilot, "s", lambda: screen.sort_key == "name")  # next sort key: name, ascending
        names = [cell(screen, rid, "name") for rid in screen._order]
        assert names == sorted(names, key=str.lower)
        await press_until(pilot, "g", lambda: screen.grouped)
        groups = [k for k in screen._order if k.startswith("group:")]
        assert groups == ["group:crd", "group:kd", "group:rrd", "group:rrdkd", "group:teacher"]
        assert table.row_count == 7 + len(groups)
        await press_until(pilot, "g", lambda: not screen.grouped)
        assert table.row_count == 7


async def test_filter_matches_configuration_values_and_tags(app, runs_dir):
    store = Store(runs_dir)
    store.put_artifact("b0000002", "tags", ["baseline"])
    store.close()
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)

        async def shown_for(text: str) -> set[str]:
            box = screen.query_one("#filter", Input)
            if not box.has_focus:
                await press_until(pilot, "slash", lambda: box.has_focus)
            box.value = ""
            await pilot.press(*text)
            await wait_for(pilot, lambda: screen.filter_text == text, f"the filter {text!r}")
            return set(screen._order)

        assert await shown_for("tau_s=0.05") == {"0a000007"}
        assert await shown_for("tau_t=0.02") == {"e0000005"}
        assert await shown_for("method=rrd") == {"c0000003", "e0000005", "0a000007"}  # not rrd+kd
        assert await shown_for("rrd") == {"c0000003", "d0000004", "e0000005", "0a000007"}
        assert await shown_for("rrd tau_s=0.04") == {"c0000003", "d0000004"}
        assert await shown_for("status=crashed") == {"e0000005"}
        assert await shown_for("baseline") == {"b0000002"}
        assert await shown_for("tag=baseline") == {"b0000002"}
        assert await shown_for("tau_s=0.3") == set()


async def test_a_long_list_fills_in_two_parts(tmp_path, presets_dir):
    from rrdtui.tui.bench import build_store

    build_store(tmp_path / "big", n_runs=300, total_rows=20_000)
    app = RRDApp(tmp_path / "big", presets_dir, clock=lambda: FIXED_NOW, poll_interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        await wait_for(pilot, lambda: screen.complete)
        assert screen.query_one(DataTable).row_count == 300 == len(screen._order)
        table = screen.query_one(DataTable)
        await press_until(pilot, "ctrl+end", lambda: table.cursor_row == table.row_count - 1)
        assert screen.cursor_run().id == screen._order[-1]
        n = screen.load_count
        await wait_for(pilot, lambda: screen.load_count > n)  # the next poll updates in place
        assert screen.query_one(DataTable).row_count == 300


async def test_home_and_end_move_the_cursor_and_enter_opens_that_run(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        table = screen.query_one(DataTable)
        table.move_cursor(row=3)
        await press_until(pilot, "home", lambda: table.cursor_row == 0, "the cursor on the first run")
        assert screen.cursor_run().id == screen._order[0]
        await press_until(pilot, "end", lambda: table.cursor_row == table.row_count - 1, "the cursor on the last")
        assert screen.cursor_run().id == screen._order[-1]
        await press_until(pilot, "home", lambda: table.cursor_row == 0)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.loaded)
        assert app.screen.run_id == screen._order[0]


async def test_empty_store_says_how_to_start(tmp_path, presets_dir):
    app = RRDApp(tmp_path / "empty", presets_dir, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        assert screen.query_one(DataTable).row_count == 0
        assert "press n" in text_of(screen.query_one("#runs-status"))


async def test_quit(app):
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        await press_until(pilot, "q", lambda: app.return_code is not None)
    assert app.return_code == 0


async def test_tags_and_note_from_the_run_list_and_the_detail(app, runs_dir):
    """t on a run edits its tags and note: stored as the CLI stores them (artifacts "tags", sorted, and
    "note"), shown after its name in the list and in its detail, found by the filter."""
    from rrdtui.runfilter import run_note, run_tags
    from rrdtui.tui.screens.notes import NotesScreen

    def stored() -> tuple[list[str], str | None]:
        store = Store(runs_dir)
        try:
            return run_tags(store, "c0000003"), run_note(store, "c0000003")
        finally:
            store.close()

    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        table = screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index("c0000003"))
        await press_until(pilot, "t", lambda: shown(app, NotesScreen))
        await pilot.press(*"published best", "tab", *"lr too high?", "enter")
        await wait_for(pilot, lambda: stored() == (["best", "published"], "lr too high?"), "the tags stored")
        # at 80 columns name and tags share what the name column has, each shortened
        await wait_for(pilot, lambda: " best" in cell(screen, "c0000003", "name"), "the tags in the list")
        name, tags = cell(screen, "c0000003", "name").split(" ", 1)
        assert name.startswith("rrd_r") and name.endswith("…") and tags.startswith("best pu")
        assert "lr too high?" in text_of(screen.query_one("#runs-status"))  # the highlighted run's note
        await pilot.press("slash", *"tag=best")
        await wait_for(pilot, lambda: screen._order == ["c0000003"], "the tag filtered")
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.has_focus)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.loaded)
        detail = app.screen
        head = text_of(detail.query_one("#detail-head"))
        assert "best published" in head and "note: lr too high?" in head
        # remove one tag and the note, from the detail
        await press_until(pilot, "t", lambda: shown(app, NotesScreen))
        tags_box = app.screen.query_one("#notes-tags", Input)
        assert tags_box.value == "best published" and tags_box.has_focus
        tags_box.value = "best"
        app.screen.query_one("#notes-note", Input).value = ""
        await pilot.press("enter")
        await wait_for(pilot, lambda: stored() == (["best"], None), "one tag left, no note")
        await wait_for(pilot, lambda: "note:" not in text_of(detail.query_one("#detail-head")), "the note gone")


# ---------------------------------------------------------------------------------------------
# Detail
# ---------------------------------------------------------------------------------------------


async def test_detail_plots_config_log_and_incremental_reads(app, runs_dir, monkeypatch):
    calls: list[tuple[str, str, int]] = []
    original = Store.series

    def spy(self, run_id, name, after_step=-1):
        calls.append((run_id, name, after_step))
        return original(self, run_id, name, after_step)

    monkeypatch.setattr(Store, "series", spy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, "c0000003")
        assert len(screen.series["val/acc"].values) == 30
        loss = screen.query_one("#p-loss", CurvePlot).figure
        assert {c.label for c in loss.curves} == {"total", "CE", "RRD", "val"}
        await show_tab(pilot, "2", "acc")
        acc = screen.query_one("#p-acc", CurvePlot).figure
        assert [r.label for r in acc.refs] == ["teacher 79.42", "paper RRD 74.48"]
        await show_tab(pilot, "3", "out")
        assert [c.label for c in screen.query_one("#p-agree", CurvePlot).figure.curves] == ["agreement"]
        await show_tab(pilot, "4", "feat")
        feat = screen.query_one("#p-feat", CurvePlot).figure
        assert [c.label for c in feat.curves] == ["CKA", "relation corr", "|Δ class logit corr|"]
        await show_tab(pilot, "5", "ent")
        assert "τs=0.04" in screen.query_one("#p-ent", CurvePlot).figure.title
        assert "student side is set sharper" in text_of(screen.query_one("#ent-caption"))
        await show_tab(pilot, "6", "info")
        info = text_of(screen.query_one("#info-text"))
        assert "tau_s: 0.04" in info and "launched rrd_r32x4_r8x4" in info
        await show_tab(pilot, "7", "log")
        await wait_for(pilot, lambda: len(screen.query_one(WrapLog).raw) >= 31)
        assert "epoch  30/30" in screen.query_one(WrapLog).raw[-1]
        await press_until(pilot, "s", lambda: screen.smoothing)
        assert all(p.smoothing for p in screen.query(CurvePlot))

        # New points arrive: only they are read, from the last step seen.
        calls.clear()
        store = Store(runs_dir)
        store.insert_metrics([("c0000003", 3100, 31.0, "val/acc", 75.0, FIXED_NOW)])
        store.close()
        with open(runs_dir / "c0000003" / "train.log", "a") as fh:
            fh.write("epoch  31/30  extra line\n")
        await wait_for(pilot, lambda: len(screen.series["val/acc"].values) == 31)
        assert screen.series["val/acc"].values[-1] == 75.0
        val_reads = [c for c in calls if c[1] == "val/acc"]
        assert val_reads and all(after == 3000 for _, _, after in val_reads)
        assert not [c for c in calls if c[1] == "train/loss"]  # unchanged series are not read at all
        await wait_for(pilot, lambda: "extra line" in screen.query_one(WrapLog).raw[-1])
        await pilot.press("escape")
        await runs_ready(pilot)


async def test_detail_shows_a_crashed_runs_error(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, "e0000005")
        head = text_of(screen.query_one("#detail-head"))
        assert "crashed" in head and "trainer process is gone" in head
        assert screen.refusal("stop") == "run e0000005 is crashed: nothing to stop"
        assert screen.refusal("resume") is None


async def test_detail_wraps_long_errors_and_log_lines_at_80_columns(app, runs_dir):
    """A long error in the head and a long log line are wrapped whole at 80 columns, never cut."""
    error = "RuntimeError: " + " ".join(f"word{i}" for i in range(40)) + " THE-END"
    line = "Traceback line " + "/very/long/path" * 12 + " LOG-END"
    store = Store(runs_dir)
    store.update_run("e0000005", error=error)
    store.close()
    with open(runs_dir / "e0000005" / "train.log", "a") as fh:
        fh.write(line + "\n")

    def squeezed(lines: list[str]) -> str:
        return "".join(lines).replace(" ", "").replace("▁", "").replace("▎", "").replace("▊", "")

    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, "e0000005")
        head = screen.query_one("#detail-head")
        await wait_for(pilot, lambda: "THE-END" in "".join(widget_lines(head)), "the error's end in the head")
        assert error.replace(" ", "") in squeezed(widget_lines(head))
        await show_tab(pilot, "7", "log")
        log = screen.query_one(WrapLog)
        await wait_for(pilot, lambda: "LOG-END" in "".join(widget_lines(log)), "the log line's end on screen")
        assert line.replace(" ", "") in squeezed(widget_lines(log))


async def test_detail_keys_that_cannot_apply_say_why(app, monkeypatch):
    """x and r on a completed run do nothing to it, and say so (no key is silently dead)."""
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, "c0000003")
        notes = record_notes(monkeypatch, screen)
        await press_until(pilot, "x", lambda: len(notes) == 1, "the answer to x")
        await press_until(pilot, "r", lambda: len(notes) == 2, "the answer to r")
        assert notes == ["run c0000003 is completed: nothing to stop", "run c0000003 is completed: nothing to resume"]
        assert app.screen is screen  # no confirmation was asked
        await press_until(pilot, "d", lambda: shown(app, ConfirmScreen))  # a completed run can be removed
        await press_until(pilot, "n", lambda: app.screen is screen)


async def test_detail_stop_with_confirmation(app, runs_dir, monkeypatch):
    # A stand-in trainer that lives until a signal comes (no clock: it cannot end on its own).
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        store = Store(runs_dir)
        store.update_run("d0000004", pid=sleeper.pid)
        store.close()
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_detail(pilot, "d0000004")
            notes = record_notes(monkeypatch, screen)
            await press_until(pilot, "d", lambda: notes, "the refusal")  # no confirmation: it is running
            assert notes == ["run d0000004 is running: stop it first (x)"] and app.screen is screen
            await press_until(pilot, "x", lambda: shown(app, ConfirmScreen))
            await press_until(pilot, "n", lambda: app.screen is screen)  # cancelled: nothing happens
            assert sleeper.poll() is None
            await press_until(pilot, "x", lambda: shown(app, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: sleeper.poll() is not None)  # the real launcher sent SIGTERM
            store = Store(runs_dir)
            assert store.db["runs"].get("d0000004")["stop_requested"] == 1
            assert any(e["message"] == "stop requested" for e in store.events("d0000004"))
            store.close()
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_detail_resume_with_confirmation(app, runs_dir, monkeypatch):
    spawned = []
    # The real resume runs; only the trainer process it would start is not started here.
    monkeypatch.setattr(
        launcher, "spawn_worker", lambda store, ids, detach, resume=False: spawned.append((ids, detach, resume))
    )
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, "e0000005")
        await press_until(pilot, "r", lambda: shown(app, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: bool(spawned))
        assert spawned == [(["e0000005"], True, True)]
        await wait_for(pilot, lambda: (screen.run or {}).get("status") == "queued")


async def test_detail_remove_with_confirmation(app, runs_dir):
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, "f0000006")
        await press_until(pilot, "d", lambda: shown(app, ConfirmScreen))
        await pilot.press("y")
        screen = await runs_ready(pilot)
        await wait_for(pilot, lambda: "f0000006" not in screen._order)
        assert not (runs_dir / "f0000006").exists()
        store = Store(runs_dir)
        assert store.get_run("f0000006") is None and not store.series("f0000006", "val/acc")
        store.close()


# ---------------------------------------------------------------------------------------------
# Launch
# ---------------------------------------------------------------------------------------------


async def open_launch(pilot) -> LaunchScreen:
    await runs_ready(pilot)
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, LaunchScreen) and pilot.app.screen.plan != "")
    return pilot.app.screen


async def type_into(pilot, screen, widget_id: str, text: str) -> None:
    box = screen.query_one(f"#{widget_id}", Input)
    box.focus()
    box.value = ""
    await pilot.press(*text)
    await wait_for(pilot, lambda: box.value == text, f"{text!r} in #{widget_id}")


async def test_launch_flow(app, runs_dir, presets_dir, monkeypatch):
    launched = []

    def fake_launch(preset_path, overrides, runs_dir, detach=True):
        launched.append((preset_path, list(overrides), runs_dir, detach))
        return ["7e57e57e"]

    monkeypatch.setattr(launcher, "launch", fake_launch)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_launch(pilot)
        preset = presets_dir / "demo_rrd.yaml"
        assert screen.preset == preset
        assert "published temperatures" in text_of(screen.query_one("#preset-desc"))
        assert screen.query_one("#f-method-tau_s", Input).value == "0.04"
        assert screen.query_one("#f-method-name", Select).value == "rrd"
        # which teacher: the launcher's own words
        store = Store(runs_dir)
        expected_plan = launcher.teacher_plan(load_preset(preset), store, str(preset))
        store.close()
        assert screen.plan == expected_plan

        await type_into(pilot, screen, "f-method-tau_s", "0.07")
        await wait_for(pilot, lambda: screen.cfg is not None and screen.cfg.method.tau_s == 0.07)  # validated
        assert screen.error is None and screen.overrides() == ["method.tau_s=0.07"]
        await type_into(pilot, screen, "f-train-epochs", "5")
        await wait_for(pilot, lambda: screen.cfg is not None and screen.cfg.train.epochs == 5)
        assert screen.overrides() == ["method.tau_s=0.07", "train.epochs=5"]
        await pilot.press("ctrl+l")
        await runs_ready(pilot)
        assert launched == [(str(preset), ["method.tau_s=0.07", "train.epochs=5"], runs_dir, True)]


async def test_launch_invalid_tau_s_shows_the_cli_message(app, presets_dir, monkeypatch):
    launched = []
    monkeypatch.setattr(launcher, "launch", lambda *a, **k: launched.append(a) or ["x"])
    with pytest.raises(ConfigError) as exc:
        load_preset(presets_dir / "demo_rrd.yaml", ["method.tau_s=-1"])
    assert "method.tau_s must be > 0" in str(exc.value)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_launch(pilot)
        notes = record_notes(monkeypatch, screen)
        await type_into(pilot, screen, "f-method-tau_s", "-1")
        await wait_for(pilot, lambda: screen.error == str(exc.value), "the CLI's message")
        assert str(exc.value) in text_of(screen.query_one("#verdict"))
        assert screen.query_one("#launch").disabled
        # ctrl+l is refused with the message; nothing is launched
        await press_until(pilot, "ctrl+l", lambda: notes, "the refusal")
        assert notes == [str(exc.value)]
        assert launched == [] and not screen.launching and isinstance(app.screen, LaunchScreen)
        # not a number: the CLI's type message
        await type_into(pilot, screen, "f-method-tau_s", "abc")
        await wait_for(pilot, lambda: (screen.error or "").endswith("got 'abc'"))
        assert screen.error.endswith("method.tau_s must be a number, got 'abc'")
        # the CLI itself prints the same line
        cli = subprocess.run(
            [sys.executable, "-c", "from rrdtui.cli import main; main()", "run", str(presets_dir / "demo_rrd.yaml"),
             "--set", "method.tau_s=-1", "--runs", str(presets_dir.parent / "cli-runs")],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert cli.returncode == 2 and cli.stderr.strip() == f"rrdtui: error: {exc.value}"


def write_preset_without_data(presets_dir: Path, nowhere: Path) -> Path:
    """A valid preset whose data set is not there (and cannot be downloaded): only the checks of a
    launch find that out."""
    raw = {**PRESETS["demo_teacher.yaml"], "name": "no_data", "data": {"name": "tiny_imagenet", "root": str(nowhere)}}
    path = presets_dir / "no_data.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


async def pick_preset(pilot, screen: LaunchScreen, path: Path) -> None:
    screen.query_one("#presets", OptionList).highlighted = screen.presets.index(path)
    await wait_for(pilot, lambda: screen.preset == path, f"{path.name} picked")


async def test_launch_form_makes_the_checks_of_a_launch(app, runs_dir, presets_dir, tmp_path, monkeypatch):
    """A preset whose data is missing is not "valid": the form says what `rrdtui run` would say
    before writing a run row, and refuses to launch."""
    from rrdtui.preflight import check_launch

    path = write_preset_without_data(presets_dir, tmp_path / "nowhere")
    with pytest.raises(ConfigError) as exc:
        check_launch(load_preset(path), str(path), Store(runs_dir))
    launched = []
    monkeypatch.setattr(launcher, "launch", lambda *a, **k: launched.append(a) or ["x"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_launch(pilot)
        notes = record_notes(monkeypatch, screen)
        await pick_preset(pilot, screen, path)
        await wait_for(pilot, lambda: not screen.checking and screen.check_error is not None, "the checks' answer")
        assert screen.error is None and screen.cfg is not None  # the configuration itself is fine
        assert screen.check_error == str(exc.value)
        verdict = " ".join(text_of(screen.query_one("#verdict")).split())
        assert str(exc.value) in verdict and "✓" not in verdict
        assert screen.query_one("#launch").disabled
        await press_until(pilot, "ctrl+l", lambda: notes, "the refusal")
        assert notes == [str(exc.value)] and launched == []
        await pick_preset(pilot, screen, presets_dir / "demo_rrd.yaml")  # synthetic data: passes
        await wait_for(pilot, lambda: not screen.checking and screen.check_error is None, "the checks' answer")
        assert "✓ valid" in text_of(screen.query_one("#verdict"))


async def test_launch_checks_run_in_a_thread_one_at_a_time(app, monkeypatch):
    """While the checks run (a process, for seconds) the form shows "checking…" and keeps taking keys;
    edits made meanwhile are checked once it answers, by one check, never two at once."""
    import rrdtui.preflight

    original = rrdtui.preflight.check_launch
    lock = threading.Lock()
    calls, in_flight, max_in_flight = [], 0, 0
    release = threading.Event()

    def held(cfg, preset, store):
        nonlocal in_flight, max_in_flight
        with lock:
            calls.append(cfg.method.tau_s)
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
        try:
            release.wait()
            return original(cfg, preset, store)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(rrdtui.preflight, "check_launch", held)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_launch(pilot)
        await wait_for(pilot, lambda: len(calls) == 1, "the first check under way")
        assert screen.checking and "checking…" in text_of(screen.query_one("#verdict"))
        await type_into(pilot, screen, "f-method-tau_s", "0.07")  # the UI answers while it checks
        await wait_for(pilot, lambda: screen.cfg is not None and screen.cfg.method.tau_s == 0.07)
        assert "checking…" in text_of(screen.query_one("#verdict")) and len(calls) == 1
        release.set()
        await wait_for(pilot, lambda: not screen.checking, "the answer for the newest inputs")
        assert calls == [0.04, 0.07] and max_in_flight == 1
        verdict = text_of(screen.query_one("#verdict"))
        assert "✓ valid" in verdict and "--set method.tau_s=0.07" in verdict


async def test_launch_method_change_and_weights(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_launch(pilot)
        screen.query_one("#f-method-name", Select).value = "kd"
        await wait_for(pilot, lambda: screen.cfg is not None and screen.cfg.method.name == "kd")  # validated
        assert screen.query_one("#f-method-alpha", Input).placeholder == "default 0.9"
        assert screen.overrides() == ["method.name=kd"]
        assert screen.cfg is not None and screen.cfg.method.alpha == 0.9


async def test_launch_save_as_preset(app, presets_dir, monkeypatch):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_launch(pilot)
        notes = record_notes(monkeypatch, screen)
        await type_into(pilot, screen, "f-method-tau_t", "0.2")
        await wait_for(pilot, lambda: screen.cfg is not None and screen.cfg.method.tau_t == 0.2)  # validated
        await type_into(pilot, screen, "save-name", "my_rrd")
        saved = presets_dir / "my_rrd.yaml"
        await press_until(pilot, "ctrl+s", lambda: notes, "the save")
        assert notes == [f"saved {saved}"] and saved.exists()
        cfg = load_preset(saved)
        assert cfg.name == "my_rrd" and cfg.method.tau_t == 0.2 and cfg.method.tau_s == 0.04
        assert saved in screen.presets
        await press_until(pilot, "ctrl+s", lambda: len(notes) == 2, "the refusal")  # exists: refused, not overwritten
        assert notes[1] == f"{saved} exists: pick another name"
        assert load_preset(saved).method.tau_t == 0.2


async def test_launch_lists_long_preset_names_on_one_line(app, presets_dir):
    """At 120 columns the preset list is as wide as its longest name: each on one line, whole."""
    long_name = "cifar100_resnet32x4-resnet8x4"
    (presets_dir / f"{long_name}.yaml").write_text((presets_dir / "demo_rrd.yaml").read_text())
    async with app.run_test(size=(120, 40)) as pilot:
        await runs_ready(pilot)
        await pilot.press("n")
        await wait_for(pilot, lambda: shown(app, LaunchScreen) and app.screen.preset is not None)
        options = app.screen.query_one("#presets", OptionList)
        await wait_for(pilot, lambda: any(long_name in line for line in widget_lines(options)), "the whole name")
        names = [line.strip(" ▊▎▔▁") for line in widget_lines(options)]
        assert [n for n in names if n] == [long_name, "demo_rrd", "demo_teacher"]


async def test_launch_with_no_presets(tmp_path, runs_dir):
    app = RRDApp(runs_dir, tmp_path / "nothing", clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        await pilot.press("n")
        await wait_for(pilot, lambda: shown(app, LaunchScreen))
        assert "No presets" in text_of(app.screen.query_one("#preset-desc"))
        await pilot.press("escape")
        await runs_ready(pilot)


# ---------------------------------------------------------------------------------------------
# Compare
# ---------------------------------------------------------------------------------------------


async def mark(pilot, screen: RunsScreen, *run_ids: str) -> None:
    table = screen.query_one(DataTable)
    for run_id in run_ids:
        table.move_cursor(row=table.get_row_index(run_id))
        await press_until(pilot, "space", lambda rid=run_id: rid in screen.marked)


async def test_compare_flow(app, monkeypatch):
    async with app.run_test(size=SIZE) as pilot:
        screen = await runs_ready(pilot)
        notes = record_notes(monkeypatch, screen)
        await press_until(pilot, "c", lambda: notes, "the hint")  # nothing marked: a hint, no screen
        assert app.screen is screen
        await mark(pilot, screen, "c0000003", "b0000002", "e0000005")
        assert screen.marked == ["c0000003", "b0000002", "e0000005"]
        assert cell(screen, "c0000003", "mark") == "●"
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded)
        cmp = app.screen
        fig = cmp.query_one("#p-cmp", CurvePlot).figure
        assert [c.label.split()[0] for c in fig.curves] == ["c0000003", "b0000002", "e0000005"]
        assert len(fig.curves[0].ys) == 30 and len(fig.curves[2].ys) == 9

        await show_tab(pilot, "2", "config")
        diff = cmp.query_one("#cfg-diff", DataTable)
        keys = [diff.get_row_at(i)[0] for i in range(diff.row_count)]
        assert {"name", "method.name", "method.tau_s", "method.tau_t", "method.gamma", "method.alpha"} <= set(keys)
        assert "optim.lr" not in keys and "student.arch" not in keys
        row = diff.get_row("method.tau_s")
        assert row[1:] == ["0.04", "0.04", "0.1"]

        await show_tab(pilot, "3", "metrics")
        metrics = cmp.query_one("#cmp-metrics", DataTable)
        rows = {str(metrics.get_row_at(i)[0]): metrics.get_row_at(i)[1:] for i in range(metrics.row_count)}
        plain = lambda v: getattr(v, "plain", str(v))  # noqa: E731
        assert [plain(v) for v in rows["RI paper"]] == ["+139%", "-", "+139%"]  # (74.48-73.33)/(73.33-72.50)
        assert [plain(v) for v in rows["paper"]] == ["74.48", "73.33", "74.48"]
        first, second = rows["val/acc"][0], rows["val/acc"][1]
        assert plain(first) == "74.42" and plain(second) == "73.42 -1.00"  # difference to the first run

        # another metric, read for the three runs
        await show_tab(pilot, "1", "curves")
        cmp.query_one("#metric", Select).value = "train/loss"
        await wait_for(pilot, lambda: cmp.query_one("#p-cmp", CurvePlot).figure.title == "train/loss"
                       and len(cmp.query_one("#p-cmp", CurvePlot).figure.curves) == 3)  # fmt: skip
        await pilot.press("escape")
        await runs_ready(pilot)


# ---------------------------------------------------------------------------------------------
# Help, command palette
# ---------------------------------------------------------------------------------------------


async def test_help_shows_the_screens_keys(app):
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        await press_until(pilot, "question_mark", lambda: shown(app, HelpScreen))
        keys = {d for items in app.screen.sections.values() for _, d, _ in items}
        assert {"Mark", "Compare", "Launch", "Filter", "Group", "Quit"} <= keys
        await pilot.press("escape")
        await runs_ready(pilot)
        await open_detail(pilot, "c0000003")
        await press_until(pilot, "question_mark", lambda: shown(app, HelpScreen))
        keys = {d for items in app.screen.sections.values() for _, d, _ in items}
        assert {"Smooth", "Stop", "Resume", "Remove", "Back"} <= keys
        await press_until(pilot, "question_mark", lambda: isinstance(app.screen, DetailScreen))


def palette_ready(app) -> bool:
    """The command palette is up and its input has the focus (typed keys go there)."""
    from textual.command import CommandPalette

    return shown(app, CommandPalette) and app.screen.query_one(Input).has_focus


def palette_shows(app, typed: str, prompt: str) -> bool:
    """The command palette has all of `typed` and lists matches, and the one enter picks (the
    highlighted) starts with `prompt`."""
    from textual.command import CommandList, CommandPalette

    if not shown(app, CommandPalette) or app.screen.query_one(Input).value != typed:
        return False
    options = app.screen.query_one(CommandList)
    if options.highlighted is None or not options.has_class("--visible"):
        return False
    return str(options.get_option_at_index(options.highlighted).hit.text).startswith(prompt)


async def test_command_palette(app):
    async with app.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: palette_ready(app))
        await pilot.press(*"launch a")
        await wait_for(pilot, lambda: palette_shows(app, "launch a", "Launch a run"), "'Launch a run' in the palette")
        await pilot.press("enter")
        await wait_for(pilot, lambda: shown(app, LaunchScreen))
        assert app.screen.query_one(OptionList).option_count == 2
        await pilot.press("escape")
        await runs_ready(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: palette_ready(app))
        await pilot.press(*"c0000003")
        await wait_for(pilot, lambda: palette_shows(app, "c0000003", "Open c0000003"), "'Open c0000003' in the palette")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.loaded)
        assert app.screen.run_id == "c0000003"


def test_run_app_is_the_entry_point():
    from rrdtui.tui.app import run_app

    assert callable(run_app)
    assert os.path.exists(ROOT / "rrdtui" / "tui" / "app.tcss")


def test_the_start_up_benchmark_runs_beside_a_bare_textual_app(tmp_path, capsys):
    """`python -m rrdtui.tui.bench --start-only`: the dashboard's cold start beside a bare Textual
    table's (a smoke test of the harness; the figures are in BENCHMARKS.md)."""
    from rrdtui.tui.bench import main

    main(["--runs", "120", "--rows", "3000", "--repeats", "1", "--start-only"])
    out = capsys.readouterr().out
    assert "bare Textual table of 100 rows drawn" in out and "x the bare app" in out


async def test_detail_shows_the_teacher_check(app, runs_dir):
    """A teacher measured far below teacher.expected_acc (the trainer's TEACHER CHECK warning) is in
    the run's head, where the user looks, not only in its events."""
    warning = "TEACHER CHECK: measured 41.00% but teacher.expected_acc is 75.61% (more than 1 point lower)"
    store = Store(runs_dir)
    store.event("e0000005", "warning", warning)
    store.close()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, "e0000005")
        head = screen.query_one("#detail-head")
        await wait_for(pilot, lambda: "TEACHER CHECK" in "".join(widget_lines(head)), "the teacher check in the head")
