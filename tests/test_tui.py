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
from rich.console import Console
from textual.widgets import DataTable, Input, Log, OptionList, Select, TabbedContent
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
from tests.tui_fixtures import FIXED_NOW, make_store, release_run, wait_for, write_presets

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


async def test_runs_table_shows_the_store(app):
    async with app.run_test(size=SIZE) as pilot:
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
        # newest first
        assert screen._order[0] == "0a000007"


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
        await wait_for(pilot, lambda: screen.query_one(Log).line_count >= 31)
        assert "epoch  30/30" in screen.query_one(Log).lines[-1]
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
        await wait_for(pilot, lambda: "extra line" in screen.query_one(Log).lines[-1])
        await pilot.press("escape")
        await runs_ready(pilot)


async def test_detail_shows_a_crashed_runs_error(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, "e0000005")
        head = text_of(screen.query_one("#detail-head"))
        assert "crashed" in head and "trainer process is gone" in head
        assert screen.check_action("stop", ()) is None
        assert screen.check_action("resume", ()) is True


async def test_detail_stop_with_confirmation(app, runs_dir):
    # A stand-in trainer that lives until a signal comes (no clock: it cannot end on its own).
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        store = Store(runs_dir)
        store.update_run("d0000004", pid=sleeper.pid)
        store.close()
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_detail(pilot, "d0000004")
            assert screen.check_action("stop", ()) is True
            assert screen.check_action("remove", ()) is None
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
