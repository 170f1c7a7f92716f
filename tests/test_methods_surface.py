"""Where the method registry shows: `rrdtui methods`, docs/methods.md, the detail screen's loss plots
and the launch screen. Each must follow the registry with no edit of its own: a method registered at
run time (tests/plugin_methods/toy.py) shows up everywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from textual.widgets import Input, Label, Select
from typer.testing import CliRunner

from rrdtui import registry
from rrdtui.cli import app as cli_app
from rrdtui.store import Store
from rrdtui.tui.app import RRDApp
from rrdtui.tui.model import loss_label, loss_series, lower_is_better
from rrdtui.tui.screens.detail import DetailScreen
from rrdtui.tui.screens.launch import LaunchScreen
from rrdtui.tui.screens.runs import RunsScreen
from rrdtui.tui.widgets.curves import CurvePlot
from tests.tui_fixtures import FIXED_NOW, make_config, make_store, wait_for, write_presets

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZE = (80, 24)

pytestmark = pytest.mark.usefixtures("utc")  # dates render the same anywhere


@pytest.fixture
def toy(monkeypatch):
    """The toy method, registered at run time as a plug-in would be, and forgotten afterwards."""
    monkeypatch.syspath_prepend(str(HERE))
    registry.register("toy", "plugin_methods.toy")
    try:
        yield registry.method_info("toy")
    finally:
        registry.REGISTRY.pop("toy", None)
        registry._spec.cache_clear()
        registry.methods.cache_clear()


def invoke(*args: str):
    return CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "80"}, catch_exceptions=False)


# ---------------------------------------------------------------------------------------------
# rrdtui methods
# ---------------------------------------------------------------------------------------------


def test_methods_lists_every_method_in_80_columns():
    result = invoke("methods")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["method", "γ/α/β", "features", "paper"]
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == list(registry.methods())  # every method and +kd, in the registry's order
    for name, info in registry.methods().items():
        assert rows[name][1] == registry.weights_text(info.weights), name
        assert rows[name][2] == (",".join(info.features) or "-"), name


def test_methods_json_has_every_field():
    result = invoke("methods", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [m["name"] for m in listed] == list(registry.methods())
    names = {f.name for f in fields(registry.MethodInfo)}
    for entry in listed:
        assert set(entry) == names
        info = registry.method_info(entry["name"])
        assert entry["weights"] == info.weights and entry["losses"] == list(info.losses)
        assert entry["options"] == info.options and entry["base"] == info.base


def test_methods_shows_a_method_registered_at_run_time(toy):
    lines = invoke("methods").output.splitlines()
    assert any(line.split()[:3] == ["toy", "1/0/0.25", "feat"] for line in lines)
    assert any(line.split()[:3] == ["toy+kd", "1/1/0.25", "feat"] for line in lines)
    listed = {m["name"]: m for m in json.loads(invoke("methods", "--json").output)}
    assert listed["toy"]["options"] == {"scale": 2.0} and listed["toy"]["module"] == "plugin_methods.toy"
    assert listed["toy+kd"]["base"] == "toy"


def test_methods_with_an_unreadable_module_is_one_line(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "ghost", "plugin_methods.ghost")
    registry.methods.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["methods"])
    finally:
        registry.methods.cache_clear()
    assert result.exit_code == 2
    assert result.output.strip() == "rrdtui: error: method module plugin_methods.ghost not found"


def test_methods_never_imports_torch():
    code = (
        "import contextlib, io, sys\n"
        "from rrdtui.cli import app\n"
        "for args in (['methods'], ['methods', '--json']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        app(args, standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# docs/methods.md
# ---------------------------------------------------------------------------------------------


def test_methods_doc_is_up_to_date():
    doc = ROOT / "docs" / "methods.md"
    expected = registry.markdown()
    current = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    assert current == expected, (
        "docs/methods.md is stale (a method was added or its SPEC changed): "
        "regenerate it with `uv run python scripts/make_methods_doc.py`"
    )
    for info in registry.methods().values():
        if info.base is None:
            assert f"## {info.name}: {info.title}" in expected
            assert all(f"`method.options.{key}`" in expected for key in info.options)


def test_methods_doc_includes_a_method_registered_at_run_time(toy):
    text = registry.markdown()
    assert "## toy: A Toy Method Registered at Run Time" in text
    assert "`method.options.scale` (2.0)" in text and "`train/loss_toy`" in text
    assert "- default weights: gamma 1, alpha 0, beta 0.25" in text


# ---------------------------------------------------------------------------------------------
# Losses: a rule, not a list of methods
# ---------------------------------------------------------------------------------------------


def test_losses_are_lower_is_better_by_name():
    for name in ("train/loss", "train/loss_at", "train/loss_toy", "first/loss_ab", "val/loss", "sim/kl"):
        assert lower_is_better(name), name
    for name in ("val/acc", "sim/cka", "train/lr", "sim/agreement"):
        assert not lower_is_better(name), name


def test_loss_series_order_and_labels():
    names = ["val/acc", "train/loss_vid", "train/loss_at", "train/loss", "val/loss", "train/loss_ce",
             "first/loss_ab", "train/lr"]  # fmt: skip
    main, first = loss_series(names, "at")
    assert main == ["train/loss", "train/loss_ce", "train/loss_at", "train/loss_vid", "val/loss"]
    assert first == ["first/loss_ab"]
    assert [loss_label(n) for n in main + first] == ["total", "CE", "AT", "VID", "val", "AB"]
    # a method's own terms in its SPEC's order, after CE and KD
    main, _ = loss_series(["train/loss_rrd", "train/loss_kd", "train/loss_ce", "train/loss_aaa"], "rrd+kd")
    assert main == ["train/loss_ce", "train/loss_kd", "train/loss_rrd", "train/loss_aaa"]


# ---------------------------------------------------------------------------------------------
# The dashboard
# ---------------------------------------------------------------------------------------------

RUN = "a7a7a7a7"


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """The dashboard's fixture store, plus an AT run whose store also has VID's term and a first stage
    (first/loss_ab at negative steps, as the loop writes it)."""
    runs = tmp_path / "runs"
    make_store(runs)
    store = Store(runs)
    try:
        cfg = make_config("at_r32x4_r8x4", "at", epochs=4)
        store.create_run(cfg, id=RUN, status="completed", preset="presets/at.yaml", created=FIXED_NOW,
                         started=FIXED_NOW + 60, ended=FIXED_NOW + 600, epoch=4, step=400, total_steps=400)  # fmt: skip
        rows = [(RUN, s, s / 100 - 0.04, "first/loss_ab", 5.0 + s / 100, FIXED_NOW) for s in range(-4, 0)]
        for step in range(25, 401, 25):
            ep = step / 100
            for name, value in (("train/loss", 3.0 - ep / 2), ("train/loss_ce", 2.0 - ep / 3),
                                ("train/loss_at", 0.002 / ep), ("train/loss_vid", 1.0 - ep / 8)):  # fmt: skip
                rows.append((RUN, step, ep, name, value, FIXED_NOW + step))
            if step % 100 == 0:
                rows += [(RUN, step, ep, "val/loss", 2.5 - ep / 4, FIXED_NOW + step), (RUN, step, ep, "val/acc", 50 + ep, FIXED_NOW + step)]  # fmt: skip
        store.insert_metrics(rows)
    finally:
        store.close()
    return runs


@pytest.fixture
def presets_dir(tmp_path: Path) -> Path:
    write_presets(tmp_path / "presets")
    return tmp_path / "presets"


@pytest.fixture
def dashboard(runs_dir: Path, presets_dir: Path) -> RRDApp:
    return RRDApp(runs_dir, presets_dir, clock=lambda: FIXED_NOW, poll_interval=0.2)


async def runs_ready(pilot) -> None:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsScreen) and pilot.app.screen.loaded)


async def test_detail_plots_every_loss_the_store_has(dashboard):
    async with dashboard.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        dashboard.push_screen(DetailScreen(RUN))
        await wait_for(pilot, lambda: isinstance(dashboard.screen, DetailScreen) and dashboard.screen.loaded)
        screen = dashboard.screen
        loss = screen.query_one("#p-loss", CurvePlot)
        assert [c.label for c in loss.figure.curves] == ["total", "CE", "AT", "VID", "val"]
        first = screen.query_one("#p-first", CurvePlot)
        await wait_for(pilot, lambda: first.display and first.size.width >= 20, "the first-stage plot")
        assert [c.label for c in first.figure.curves] == ["AB"]
        assert list(first.figure.curves[0].xs) == pytest.approx([-0.08, -0.07, -0.06, -0.05])  # negative steps read
        assert loss.size.width >= 20  # both plots fit side by side at 80 columns


async def test_detail_has_no_first_stage_plot_without_one(dashboard):
    async with dashboard.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        dashboard.push_screen(DetailScreen("d0000004"))  # rrd+kd, running
        await wait_for(pilot, lambda: isinstance(dashboard.screen, DetailScreen) and dashboard.screen.loaded)
        screen = dashboard.screen
        assert [c.label for c in screen.query_one("#p-loss", CurvePlot).figure.curves] == [
            "total", "CE", "KD", "RRD", "val"
        ]  # fmt: skip
        assert not screen.query_one("#p-first", CurvePlot).display


async def test_launch_offers_a_method_registered_at_run_time(dashboard, toy):
    async with dashboard.run_test(size=SIZE) as pilot:
        await runs_ready(pilot)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(dashboard.screen, LaunchScreen) and dashboard.screen.plan != "")
        screen = dashboard.screen
        assert "toy" in screen.choices["method.name"] and "toy+kd" in screen.choices["method.name"]
        info = str(screen.query_one("#method-info").render())
        assert "Relational Representation Distillation" in info  # the preset's method: rrd
        assert not screen.query_one("#f-option-0", Input).display  # rrd has no options

        screen.query_one("#f-method-name", Select).value = "toy"  # refused if it were not offered
        await wait_for(pilot, lambda: screen.cfg is not None and screen.cfg.method.name == "toy", "toy validated")
        info = str(screen.query_one("#method-info").render())
        assert "A Toy Method Registered at Run Time" in info and "1/0/0.25" in info
        assert screen.query_one("#f-method-beta", Input).placeholder == "default 0.25"
        assert screen.cfg.method.beta == 0.25
        # its option, editable, its default as placeholder
        assert str(screen.query_one("#option-label-0", Label).render()) == "scale"
        box = screen.query_one("#f-option-0", Input)
        assert box.display and box.placeholder == "default 2.0" and box.value == ""
        assert not screen.query_one("#f-option-1", Input).display
        box.focus()
        await pilot.press("3")
        await wait_for(pilot, lambda: screen.cfg is not None and screen.cfg.method.options == {"scale": 3.0})
        assert screen.overrides() == ["method.name=toy", "method.options.scale=3"]
        # a wrong value gets the CLI's message
        await pilot.press("x")
        await wait_for(pilot, lambda: screen.error is not None and "method.options.scale" in screen.error)
