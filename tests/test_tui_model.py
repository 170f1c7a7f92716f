"""The dashboard's data layer and `rrdtui.plotting`, without a UI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rrdtui.plotting import Curve, Figure, Ref, downsample, draw, plot_runs, smooth
from rrdtui.store import Store, StoreError
from rrdtui.tui.model import (
    LogTail,
    RunLister,
    config_diff,
    filter_rows,
    fmt_duration,
    paper_label,
    paper_number,
    paper_ri,
    read_increments,
    relative_improvement,
    short_arch,
    sort_rows,
)
from tests.tui_fixtures import PAPER, make_store, release_run


@pytest.fixture
def store(tmp_path: Path):
    make_store(tmp_path / "runs", with_logs=False)
    s = Store(tmp_path / "runs")
    yield s
    s.close()


def test_paper_labels_and_relative_improvement():
    assert paper_label("rrd+kd") == "RRD+KD" and paper_label("none") == "student" and paper_label("crd") == "CRD"
    assert paper_number(PAPER, "rrd") == 74.48 and paper_number(PAPER, "none") == 72.50
    assert paper_number(None, "rrd") is None
    assert relative_improvement(74.48, 73.33, 72.50) == pytest.approx(1.15 / 0.83)
    assert relative_improvement(74.0, 73.0, 73.0) is None
    assert paper_ri(PAPER, "rrd") == pytest.approx((74.48 - 73.33) / (73.33 - 72.50))
    assert paper_ri(PAPER, "kd") is None and paper_ri(None, "rrd") is None


def test_run_lister_uses_runs_and_latest(store):
    rows = {r.id: r for r in RunLister().load(store)}
    assert len(rows) == 7
    c = rows["c0000003"]
    assert (c.tau_s, c.tau_t, c.paper, c.status) == (0.04, 0.1, 74.48, "completed")
    assert c.best == pytest.approx(max(v for _, _, v in store.series("c0000003", "val/acc")))
    # the running run has no best_acc on its row: the fallback reads it once, then incrementally
    lister = RunLister()
    d = {r.id: r for r in lister.load(store)}["d0000004"]
    assert d.best == pytest.approx(max(v for _, _, v in store.series("d0000004", "val/acc")))
    store.insert_metrics([("d0000004", 9999, 99.99, "val/acc", 99.0, 0.0)])
    d = {r.id: r for r in lister.load(store)}["d0000004"]
    assert d.best == 99.0 and d.last == 99.0
    assert fmt_duration(d.time_left(d.started + 100)) != ""


def test_sort_and_filter(store):
    rows = RunLister().load(store)
    assert [r.id for r in filter_rows(rows, "CRASHED")] == ["e0000005"]
    assert {r.id for r in filter_rows(rows, "r8x4 kd")} == {"b0000002", "d0000004"}
    best = sort_rows(rows, "best", reverse=True)
    assert best[0].id == "a0000001" and best[-1].id == "0a000007"  # no accuracy sorts last
    assert short_arch("resnet32x4") == "r32x4" and short_arch("ResNet50") == "ResNet50"


def test_read_increments_and_truncation(store):
    points, resets = read_increments(store, "c0000003", ["val/acc", "train/loss"], {})
    assert len(points["val/acc"]) == 30 and not resets
    last = {name: rows[-1][0] for name, rows in points.items()}
    points, resets = read_increments(store, "c0000003", ["val/acc", "train/loss"], last)
    assert points == {} and not resets
    store.truncate_metrics("c0000003", 1000)  # a resume rewrites past step 1000
    points, resets = read_increments(store, "c0000003", ["val/acc"], last)
    assert resets == {"val/acc"} and len(points["val/acc"]) == 10


def test_log_tail(tmp_path: Path):
    path = tmp_path / "train.log"
    tail = LogTail(path, first_bytes=64)
    assert tail.read() == (False, [])
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    reset, lines = tail.read()
    assert not reset and lines[-1] == "line 99" and len(lines) < 100  # only the end of a long log
    with open(path, "a") as fh:
        fh.write("line 100\npartial")
    assert tail.read() == (False, ["line 100"])
    with open(path, "a") as fh:
        fh.write(" done\n")
    assert tail.read() == (False, ["partial done"])
    path.write_text("new\n")  # truncated (a fresh log)
    assert tail.read() == (True, ["new"])


def test_config_diff_shows_only_differences():
    a = {"name": "a", "method": {"name": "rrd", "tau_s": 0.04, "tau_t": 0.1}, "optim": {"lr": 0.05}}
    b = {"name": "b", "method": {"name": "rrd", "tau_s": 0.1, "tau_t": 0.1}, "optim": {"lr": 0.05}, "paper": None}
    assert config_diff([a, b]) == [("name", ["a", "b"]), ("method.tau_s", ["0.04", "0.1"]), ("paper", ["", "null"])]
    assert config_diff([a, a]) == []


def test_smooth_and_downsample():
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no drag towards 0
    assert math.isnan(smooth([1.0, float("nan"), 2.0])[1])
    xs = [float(i) for i in range(10_000)]
    dx, dy = downsample(xs, xs, 100)
    assert len(dx) <= 100 and dx[-1] == 9999.0 and dy[-1] == 9999.0


def test_draw_skips_non_finite_points():
    import plotext

    plotext.clear_figure()
    plotext.plotsize(60, 15)
    fig = Figure([Curve("loss", [0, 1, 2], [1.0, float("nan"), float("inf")])], [Ref("paper", 0.5)], "loss")
    draw(plotext, fig, width=60, color=False)
    out = plotext.build()
    plotext.clear_figure()
    assert "loss" in out and "paper" in out


def test_plot_runs(store):
    text = plot_runs(store, ["c0000003", "b00"], None, width=90, height=20, color=False)
    assert "val/acc" in text and "c0000003 rrd_r32x4_r8x4" in text and "b0000002 kd_r32x4_r8x4" in text
    assert "\x1b[" not in text
    one = plot_runs(store, ["c0000003"], "val/acc", width=90, height=20, color=False)
    assert "teacher 79.42" in one and "paper RRD 74.48" in one
    assert "train/loss" in plot_runs(store, ["e0000005"], "train/loss", width=60, height=15, color=False)
    with pytest.raises(StoreError, match="no 'nope' values"):
        plot_runs(store, ["c0000003"], "nope", width=60, height=15)
    with pytest.raises(StoreError):
        plot_runs(store, ["zzzz"], None)
    colored = plot_runs(store, ["c0000003"], None, width=60, height=15, color=True)
    assert "\x1b[" in colored


def test_quick_first_read_matches_the_store(store, tmp_path):
    quick = RunLister().load_quick(store.runs_dir)
    assert quick is not None and quick == RunLister().load(store)
    assert RunLister().load_quick(tmp_path / "nothing") is None
    # a running run whose process is gone: the Store must read (and mark it crashed)
    release_run(store.runs_dir, "d0000004")
    store.update_run("d0000004", heartbeat=0.0)
    assert RunLister().load_quick(store.runs_dir) is None
    assert {r.id: r.status for r in RunLister().load(store)}["d0000004"] == "crashed"
