"""Snapshots of the main screens on fixed data (fixed ids, times and values; a frozen clock; UTC).

Update after an intended change of look: `uv run pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, TabbedContent

from rrdtui.tui.app import RRDApp
from rrdtui.tui.screens import compare, detail
from rrdtui.tui.screens.compare import CompareScreen
from rrdtui.tui.screens.detail import DetailScreen
from rrdtui.tui.screens.help import HelpScreen
from rrdtui.tui.screens.launch import LaunchScreen
from rrdtui.tui.screens.runs import RunsScreen
from tests.tui_fixtures import FIXED_NOW, make_store, wait_for, write_presets

SMALL = (80, 24)
LARGE = (120, 40)

pytestmark = pytest.mark.usefixtures("utc")  # dates render the same anywhere


@pytest.fixture
def app(tmp_path: Path) -> RRDApp:
    make_store(tmp_path / "runs")
    write_presets(tmp_path / "presets")
    # A long poll interval: nothing changes under the camera.
    return RRDApp(tmp_path / "runs", tmp_path / "presets", clock=lambda: FIXED_NOW, poll_interval=60)


async def runs_loaded(pilot) -> None:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen) and pilot.app.screen.loaded)
    await pilot.pause()


async def show_tab(pilot, tab: str, tabs: tuple[str, ...]) -> None:
    """Press the tab's number key and wait until that tab is the one shown."""
    await pilot.press(tab)
    await wait_for(pilot, lambda: pilot.app.screen.query_one(TabbedContent).active == tabs[int(tab) - 1])
    await pilot.pause()


def open_detail(run_id: str, tab: str):
    async def run_before(pilot) -> None:
        await runs_loaded(pilot)
        table = pilot.app.screen.query_one(DataTable)
        table.move_cursor(row=table.get_row_index(run_id))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, DetailScreen) and pilot.app.screen.loaded)
        await show_tab(pilot, tab, detail.TABS)

    return run_before


def open_compare(tab: str):
    async def run_before(pilot) -> None:
        await runs_loaded(pilot)
        screen = pilot.app.screen
        table = screen.query_one(DataTable)
        for run_id in ("c0000003", "b0000002", "d0000004"):
            table.move_cursor(row=table.get_row_index(run_id))
            await pilot.press("space")
            await wait_for(pilot, lambda rid=run_id: rid in screen.marked)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen) and pilot.app.screen.loaded)
        await show_tab(pilot, tab, compare.TABS)

    return run_before


async def open_launch(pilot) -> None:
    await runs_loaded(pilot)
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, LaunchScreen) and pilot.app.screen.plan != ""
                   and not pilot.app.screen.checking)  # fmt: skip
    await pilot.pause()


async def open_help(pilot) -> None:
    await runs_loaded(pilot)
    await pilot.press("question_mark")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen) and pilot.app.screen.is_mounted)
    await pilot.pause()


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_runs_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=runs_loaded)


def test_runs_grouped(snap_compare, app):
    async def grouped(pilot) -> None:
        await runs_loaded(pilot)
        await pilot.press("g")
        await wait_for(pilot, lambda: pilot.app.screen.grouped and pilot.app.screen._order[0].startswith("group:"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SMALL, run_before=grouped)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_detail_accuracy(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=open_detail("c0000003", "2"))


def test_detail_entropy(snap_compare, app):
    assert snap_compare(app, terminal_size=SMALL, run_before=open_detail("c0000003", "5"))


def test_detail_outputs(snap_compare, app):
    assert snap_compare(app, terminal_size=SMALL, run_before=open_detail("c0000003", "3"))


def test_detail_crashed_loss(snap_compare, app):
    assert snap_compare(app, terminal_size=LARGE, run_before=open_detail("e0000005", "1"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_compare_metrics(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=open_compare("3"))


def test_compare_curves(snap_compare, app):
    assert snap_compare(app, terminal_size=LARGE, run_before=open_compare("1"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_launch_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=open_launch)


def test_help_screen(snap_compare, app):
    assert snap_compare(app, terminal_size=SMALL, run_before=open_help)
