"""The studies view of the dashboard, driven through Textual's Pilot at 80x24 on a real store in tmp_path:
studies saved with Store.save_study, runs created with Store.create_run from resolved configurations,
accuracy rows through Store.insert_metrics and statuses through Store.update_run (no training).
Snapshots of the view at 80x24 (update: `uv run pytest tests/test_tui_studies.py --snapshot-update`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from textual.widgets import DataTable, TabbedContent

from conftest import TRAIN
from rrdtui.config import from_mapping
from rrdtui.ownership import RunLock
from rrdtui.store import Store
from rrdtui.tui.app import RRDApp
from rrdtui.tui.screens.confirm import ConfirmScreen
from rrdtui.tui.screens.detail import DetailScreen
from rrdtui.tui.screens.help import HelpScreen
from rrdtui.tui.screens.runs import RunsScreen
from rrdtui.tui.screens.studies import BandPlot, GroupRunsScreen, StudiesScreen
from tests.tui_fixtures import FIXED_NOW, wait_for, widget_lines, write_presets

ROOT = Path(__file__).resolve().parents[1]
SIZE = (80, 24)
TEACHER = {"checkpoint": "/nonexistent/ckpt_epoch_240.pth", "arch": "wrn_40_2"}
GRID = {"method.tau_s": [0.02, 0.04], "method.tau_t": [0.1, 0.2]}
# (tau_s, tau_t) -> final val/acc of seeds 0 and 1 (None: not there yet); seed 1 of (0.04, 0.2) is running.
FINALS = {(0.02, 0.1): (70.0, 72.0), (0.02, 0.2): (73.0, 74.0), (0.04, 0.1): (75.0, 76.0), (0.04, 0.2): (74.2, None)}
RUNNING = "5a000008"

pytestmark = pytest.mark.usefixtures("utc")


def cfg(name: str, seed: int, method: dict):
    raw = {"name": name, "seed": seed, "data": {"name": "cifar100"}, "teacher": TEACHER,
           "student": {"arch": "wrn_16_2"}, "method": method, "optim": {"milestones": [2]}, "train": TRAIN}  # fmt: skip
    return from_mapping(raw, "test")


def val_rows(run_id: str, final: float, epochs: int = 3) -> list[tuple]:
    """val/acc for epochs 1..epochs, ending at `final` (two points a epoch below it)."""
    return [(run_id, e * 10, float(e), "val/acc", final - 2.0 * (3 - e), FIXED_NOW) for e in range(1, epochs + 1)]


def add(store: Store, run_id: str, study: str, config, point: dict, status: str, rows: list[tuple], created: float) -> None:
    store.create_run(config.to_dict(), id=run_id, study=study, study_point=json.dumps(point),
                     config_hash=config.fingerprint(), created=created)  # fmt: skip
    store.insert_metrics(rows)
    store.update_run(run_id, status=status)


@pytest.fixture
def runs_dir(tmp_path: Path):
    """Two studies: `sweep` (tau_s x tau_t x 2 seeds, 7 completed and 1 running, its runner alive) and
    `baseline` (KD over 3 seeds: completed, failed, queued; no runner)."""
    runs = tmp_path / "runs"
    store = Store(runs)
    locks = []
    try:
        store.save_study("sweep", "sweep.yaml", {"name": "sweep", "grid": GRID, "seeds": [0, 1]})
        store.update_study("sweep", created=FIXED_NOW - 100, started=FIXED_NOW - 90)
        i = 0
        for (tau_s, tau_t), finals in FINALS.items():
            for seed in (0, 1):
                i += 1
                run_id = f"5a00000{i}"
                config = cfg(f"sweep_{i}", seed, {"name": "rrd", "tau_s": tau_s, "tau_t": tau_t, "queue_size": 100})
                point = {"preset": "x.yaml", "grid": {"method.tau_s": tau_s, "method.tau_t": tau_t}, "seed": seed}
                final = finals[seed]
                if final is None:  # running: two epochs so far
                    add(store, run_id, "sweep", config, point, "running", val_rows(run_id, 73.0, 2), FIXED_NOW - 80 + i)
                else:
                    add(store, run_id, "sweep", config, point, "completed", val_rows(run_id, final), FIXED_NOW - 80 + i)
        assert run_id == RUNNING
        # The running run is owned by this process (its lock), with no pid to signal; so is the runner.
        store.update_run(RUNNING, pid=None, heartbeat=FIXED_NOW + 10**9)
        for folder in (store.run_dir(RUNNING), store.study_dir("sweep")):
            lock = RunLock(folder)
            assert lock.acquire()
            locks.append(lock)

        store.save_study("baseline", "baseline.yaml", {"name": "baseline", "grid": {}, "seeds": [0, 1, 2]})
        store.update_study("baseline", created=FIXED_NOW - 200)
        for seed, status in ((0, "completed"), (1, "failed"), (2, "queued")):
            run_id = f"6b00000{seed + 1}"
            config = cfg(f"kd_{seed}", seed, {"name": "kd"})
            point = {"preset": "kd.yaml", "grid": {}, "seed": seed}
            rows = val_rows(run_id, 74.0) if status == "completed" else []
            add(store, run_id, "baseline", config, point, status, rows, FIXED_NOW - 190 + seed)
        # the queued run belongs to a live process (this one) that will start it
        store.update_run("6b000003", pid=os.getpid())
    finally:
        store.close()
    yield runs
    for lock in locks:
        lock.release()


@pytest.fixture
def app(runs_dir: Path, tmp_path: Path) -> RRDApp:
    write_presets(tmp_path / "presets")
    return RRDApp(runs_dir, tmp_path / "presets", clock=lambda: FIXED_NOW, poll_interval=0.2)


async def open_studies(pilot) -> StudiesScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen) and pilot.app.screen.loaded)
    await pilot.press("y")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, StudiesScreen) and pilot.app.screen.table is not None)
    return pilot.app.screen


def plain(table: DataTable, row: str, column: str) -> str:
    value = table.get_cell(row, column)
    return getattr(value, "plain", str(value))


def group_key(screen: StudiesScreen, label: str) -> str:
    return next(g.key for g in screen.table.groups if g.label == label)


def test_the_studies_view_leaves_torch_unimported():
    code = (
        "import rrdtui.tui.screens.studies, rrdtui.studies.runner, rrdtui.studies.table, sys; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_list_shows_each_study_progress_and_runner(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot)
        studies = screen.query_one("#studies", DataTable)
        assert screen._studies_sync.order == ["sweep", "baseline"]  # newest first
        assert [plain(studies, "sweep", c) for c in ("done", "running", "queued", "failed", "runner")] == [
            "7/8", "1", "0", "0", "alive"
        ]  # fmt: skip
        assert [plain(studies, "baseline", c) for c in ("done", "running", "queued", "failed", "runner")] == [
            "1/3", "0", "1", "1", "gone"
        ]  # fmt: skip
        # The other study's table follows the cursor.
        studies.focus()
        await pilot.press("down")
        await wait_for(pilot, lambda: screen.table is not None and screen.table.name == "baseline")
        groups = screen.query_one("#groups", DataTable)
        await wait_for(pilot, lambda: groups.row_count == 1)
        (key,) = screen._groups_sync.order
        assert plain(groups, key, "n") == "1/3"
        assert plain(groups, key, "final") == "74.00"
        assert plain(groups, key, "paper") == "74.92"  # the paper's KD for wrn_40_2 -> wrn_16_2


async def test_table_shows_the_groups_with_mean_and_std(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot)
        groups = screen.query_one("#groups", DataTable)
        await wait_for(pilot, lambda: groups.row_count == 4)
        labels = [g.label for g in screen.table.groups]
        assert labels == ["tau_s=0.02 tau_t=0.1", "tau_s=0.02 tau_t=0.2", "tau_s=0.04 tau_t=0.1", "tau_s=0.04 tau_t=0.2"]
        rows = {label: {c: plain(groups, group_key(screen, label), c) for c in screen._groups_sync.columns}
                for label in labels}  # fmt: skip
        first = rows["tau_s=0.02 tau_t=0.1"]
        # 70 and 72: mean 71, sample std sqrt(2) = 1.41; best over epochs = the finals here
        assert (first["group"], first["n"], first["final"], first["best"]) == ("tau_s=0.02 tau_t=0.1", "2", "71.00±1.41", "71.00")
        assert (first["paper"], first["diff"]) == ("75.33", "-4.33")  # the paper's RRD for the pair
        assert rows["tau_s=0.04 tau_t=0.1"]["final"] == "75.50±0.71"
        assert rows["tau_s=0.04 tau_t=0.1"]["diff"] == "+0.17"
        # one of two completed: N 1/2, no spread
        assert (rows["tau_s=0.04 tau_t=0.2"]["n"], rows["tau_s=0.04 tau_t=0.2"]["final"]) == ("1/2", "74.20")
        # every column fits 80 cells whole
        assert sum(w + 2 for _, w in screen._groups_sync.columns.values()) <= 80


async def test_heatmap_shows_every_cell(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: screen.query_one(TabbedContent).active == "heat")
        heat = screen.query_one("#heatmap")
        await wait_for(pilot, lambda: heat.size.width > 0)
        text = "\n".join(widget_lines(heat))
        for value in ("71.00", "73.50", "75.50", "74.20", "±1.41", "±0.71", "n=1", "0.02", "0.04", "0.1", "0.2"):
            assert value in text, value
        assert "tau_s ↓" in text and "tau_t →" in text
        lines = widget_lines(heat)
        row_02 = next(line for line in lines if line.lstrip().startswith("0.02"))
        assert row_02.split() == ["0.02", "71.00", "73.50"]
        row_04 = next(line for line in lines if line.lstrip().startswith("0.04"))
        assert row_04.split() == ["0.04", "75.50", "74.20"]


async def test_selecting_groups_plots_their_mean_and_band(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot)
        await pilot.press("1")
        groups = screen.query_one("#groups", DataTable)
        await wait_for(pilot, lambda: groups.has_focus and groups.row_count == 4)
        await pilot.press("space")  # the first group, and the cursor moves on
        await pilot.press("space")  # the second
        first, second = group_key(screen, "tau_s=0.02 tau_t=0.1"), group_key(screen, "tau_s=0.02 tau_t=0.2")
        await wait_for(pilot, lambda: set(screen.curves) == {first, second})
        assert screen.selected["sweep"] == [first, second]
        assert plain(groups, first, "mark") == "●"
        # mean and std per epoch over the two seeds: epoch 3 is the finals (70, 72)
        points = screen.curves[first].series["val/acc"]
        assert [p[0] for p in points] == [1.0, 2.0, 3.0]
        assert points[-1][1] == pytest.approx(71.0) and points[-1][2] == pytest.approx(2**0.5)
        await pilot.press("3")
        plot = screen.query_one("#c-val", BandPlot)
        await wait_for(pilot, lambda: screen.query_one(TabbedContent).active == "curves" and plot.size.width > 0)
        assert [len(pts) for _, pts in plot.groups] == [3, 3]
        assert "tau_s=0.02 tau_t=0.1" in "".join(widget_lines(screen.query_one("#curve-legend")))
        assert not screen.query_one("#c-test").display  # no test/acc in this study
        # space again drops a group from the curves
        await pilot.press("1")
        groups.move_cursor(row=0)
        await pilot.press("space")
        await wait_for(pilot, lambda: set(screen.curves) == {second})


async def test_enter_opens_a_groups_runs_then_the_detail(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot)
        await pilot.press("1")
        groups = screen.query_one("#groups", DataTable)
        await wait_for(pilot, lambda: groups.has_focus and groups.row_count == 4)
        groups.move_cursor(row=3)  # tau_s=0.04 tau_t=0.2: seed 0 completed, seed 1 running
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, GroupRunsScreen))
        picker = pilot.app.screen
        runs = picker.query_one(DataTable)
        assert [plain(runs, r, "status") for r in ("5a000007", RUNNING)] == ["completed", "running"]
        runs.move_cursor(row=1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, DetailScreen) and pilot.app.screen.loaded)
        assert pilot.app.screen.run_id == RUNNING
        await pilot.press("escape")
        await wait_for(pilot, lambda: pilot.app.screen is screen)


async def test_x_stops_the_study_after_a_question(app, monkeypatch):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot)
        notes: list[str] = []
        original = screen.notify
        monkeypatch.setattr(screen, "notify", lambda message, *a, **k: (notes.append(str(message)), original(message, *a, **k)))
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        assert "Stop study sweep" in pilot.app.screen.question
        await pilot.press("n")  # no: nothing happens
        await wait_for(pilot, lambda: pilot.app.screen is screen)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: notes, "the notification")
        assert notes == [f"study sweep: stop requested for 1 run ({RUNNING})"]
        store = Store(app.runs_dir)
        try:
            assert store.get_study("sweep")["stop_requested"] == 1
            assert store.get_run(RUNNING)["stop_requested"] == 1
        finally:
            store.close()
        # the runner (still alive here) shows as stopping
        studies = screen.query_one("#studies", DataTable)
        await wait_for(pilot, lambda: plain(studies, "sweep", "runner") == "stopping")


async def test_refreshes_as_runs_progress(app):
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot)
        groups = screen.query_one("#groups", DataTable)
        await wait_for(pilot, lambda: groups.row_count == 4)
        key = group_key(screen, "tau_s=0.04 tau_t=0.2")
        assert plain(groups, key, "n") == "1/2"
        loads = screen.load_count
        store = Store(app.runs_dir)
        try:  # the running run finishes its third epoch at 75.2 and completes
            store.insert_metrics([(RUNNING, 30, 3.0, "val/acc", 75.2, FIXED_NOW)])
            store.update_run(RUNNING, status="completed", epoch=3, step=30)
        finally:
            store.close()
        await wait_for(pilot, lambda: plain(groups, key, "n") == "2", "the group to complete")
        assert plain(groups, key, "final") == "74.70±0.71"
        assert plain(screen.query_one("#studies", DataTable), "sweep", "done") == "8/8"
        assert screen.load_count > loads


async def test_polls_never_overlap(app, monkeypatch):
    """A read held in flight: the timer, a refresh and another study all wait for it, then one more
    read brings the study asked for."""
    from rrdtui.tui.screens import studies as module

    real = module.open_store
    gate, entered, lock = threading.Event(), threading.Event(), threading.Lock()
    inside = most = 0

    @contextmanager
    def gated(runs_dir):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        entered.set()
        gate.wait(120)  # a hang guard: the test opens the gate
        try:
            with real(runs_dir) as store:
                yield store
        finally:
            with lock:
                inside -= 1

    async with app.run_test(size=SIZE) as pilot:
        screen = await open_studies(pilot)
        monkeypatch.setattr(module, "open_store", gated)
        screen.poll(force=True)
        await wait_for(pilot, entered.is_set, "a read to start")
        screen.query_one("#studies", DataTable).focus()
        await pilot.press("down")  # another study, while the read is in flight
        for _ in range(3):
            screen.poll(force=True)
        await pilot.pause()
        assert inside == 1
        gate.set()
        await wait_for(pilot, lambda: screen.table is not None and screen.table.name == "baseline", "baseline's table")
        assert most == 1


async def test_y_only_from_the_run_list_and_listed_in_help(app):
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen) and pilot.app.screen.loaded)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        keys = [k for section in pilot.app.screen.sections.values() for k in section]
        assert ("y", "Studies", True) in keys
        await pilot.press("escape")
        screen = await open_studies(pilot)
        await pilot.press("y")  # not again from the studies
        await pilot.pause()
        assert pilot.app.screen is screen
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen))


async def test_no_studies_says_how_to_start_one(tmp_path):
    store = Store(tmp_path / "runs")
    try:  # a run, but no study
        config = cfg("plain", 0, {"name": "kd"})
        store.create_run(config.to_dict(), id="7c000001", config_hash=config.fingerprint(), created=FIXED_NOW)
        store.update_run("7c000001", status="completed")
    finally:
        store.close()
    app = RRDApp(tmp_path / "runs", tmp_path / "presets", clock=lambda: FIXED_NOW, poll_interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen) and pilot.app.screen.loaded)
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, StudiesScreen) and pilot.app.screen.loaded)
        status = "".join(widget_lines(pilot.app.screen.query_one("#studies-status")))
        assert "No studies yet" in status


# -- snapshots ------------------------------------------------------------------------------------


@pytest.fixture
def snap_app(runs_dir: Path, tmp_path: Path) -> RRDApp:
    write_presets(tmp_path / "presets")
    return RRDApp(runs_dir, tmp_path / "presets", clock=lambda: FIXED_NOW, poll_interval=60)


async def _studies_shown(pilot) -> StudiesScreen:
    screen = await open_studies(pilot)
    await wait_for(pilot, lambda: screen.query_one("#groups", DataTable).row_count == 4)
    await pilot.pause()
    return screen


def test_snapshot_studies_table(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=SIZE, run_before=_studies_shown)


def test_snapshot_heatmap(snap_compare, snap_app):
    async def heatmap(pilot) -> None:
        screen = await _studies_shown(pilot)
        await pilot.press("2")
        await wait_for(pilot, lambda: screen.query_one(TabbedContent).active == "heat")
        await pilot.pause()

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=heatmap)


def test_snapshot_curves(snap_compare, snap_app):
    async def curves(pilot) -> None:
        screen = await _studies_shown(pilot)
        await pilot.press("1")
        await pilot.press("space", "space", "space")
        await wait_for(pilot, lambda: len(screen.curves) == 3)
        await pilot.press("3")
        await wait_for(pilot, lambda: screen.query_one(TabbedContent).active == "curves")
        await pilot.pause()

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=curves)
