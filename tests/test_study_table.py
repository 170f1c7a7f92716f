"""The study table (rrdtui.studies.table): seed groups and their statistics, final/selected/best,
relative improvement over KD, the matrix and every output format, over a real store in tmp_path with
metric rows written directly (no training). Expected numbers are computed by hand."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from conftest import TINY_DATA, TRAIN
from rrdtui.config import from_mapping
from rrdtui.ownership import RunLock
from rrdtui.store import Store, StoreError
from rrdtui.studies.table import (
    FORMATS,
    group_curves,
    relative_improvement,
    render,
    study_table,
)

TEACHER = {"checkpoint": "/nonexistent/ckpt_epoch_240.pth", "arch": "resnet14"}
RRD = {"name": "rrd", "queue_size": 100}


def cfg(name="run", seed=0, data=None, **sections):
    raw = {"name": name, "seed": seed, "data": data or TINY_DATA, "optim": {"lr": 0.05, "milestones": [2]}, "train": TRAIN}
    raw.update(sections)
    return from_mapping(raw, "test")


def add_run(store, study, config, *, status="completed", val=None, test=None, teacher_acc=None, point=None, **fields):
    """A run of `study` with one val/acc (and test/acc) row per epoch (epochs 1, 2, ...)."""
    if point is None:
        point = {"preset": "p.yaml", "grid": {}, "seed": config.seed}
    run_id = store.create_run(
        config.to_dict(), study=study, study_point=json.dumps(point), config_hash=config.fingerprint(), **fields
    )
    rows = []
    for name, values in (("val/acc", val), ("test/acc", test)):
        for epoch, value in enumerate(values or [], start=1):
            rows.append((run_id, epoch * 10, float(epoch), name, value, 0.0))
    store.insert_metrics(rows)
    store.update_run(run_id, status=status, teacher_acc=teacher_acc)
    return run_id


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "runs")
    yield s
    s.close()


def by_label(table):
    return {g.label: g for g in table.groups}


def test_groups_differ_only_in_seed_and_statistics_by_hand(store):
    store.save_study("s", "s.yaml", {"name": "s", "grid": {"method.tau_s": [0.04, 0.02]}, "seeds": [0, 1, 2]})
    # tau_s 0.04 over three seeds; the name and group (cosmetic) differ and do not split the group.
    a = add_run(store, "s", cfg("a", 0, teacher=TEACHER, method=RRD), val=[60, 71, 70], teacher_acc=75.0)
    b = add_run(store, "s", cfg("b", 1, teacher=TEACHER, method=RRD, group="x"), val=[65, 72, 72], teacher_acc=77.0)
    c = add_run(store, "s", cfg("c", 2, teacher=TEACHER, method=RRD), val=[75, 73, 74], teacher_acc=76.0)
    # tau_s 0.02: another group.
    d = add_run(store, "s", cfg("d", 0, teacher=TEACHER, method={**RRD, "tau_s": 0.02}), val=[50, 55, 58])
    table = study_table(store, "s")

    assert table.label_keys == ["method.tau_s"]
    assert "method.tau_s" in table.varying and "seed" not in table.varying and "name" not in table.varying
    groups = by_label(table)
    assert set(groups) == {"tau_s=0.04", "tau_s=0.02"}
    g = groups["tau_s=0.04"]
    assert g.run_ids == [a, b, c] and groups["tau_s=0.02"].run_ids == [d]
    assert g.n == 3
    # final (last epoch): 70, 72, 74 -> mean 72, sample std sqrt((4 + 0 + 4) / 2) = 2, s.e. 2 / sqrt(3)
    assert g.final.values == [70, 72, 74]
    assert g.final.mean == pytest.approx(72.0)
    assert g.final.std == pytest.approx(2.0)
    assert g.final.sem == pytest.approx(1.1547005383792515)
    # best over epochs: 71, 72, 75 -> mean 218 / 3, deviations -5/3, -2/3, 7/3: std sqrt((78/9) / 2)
    assert g.best.mean == pytest.approx(72.66666666666667)
    assert g.best.std == pytest.approx(2.0816659994661326)
    assert g.best.sem == pytest.approx(1.2018504251546631)
    # no holdout: no selected accuracy
    assert g.selected.mean is None and all(r.selected is None for r in g.runs)
    assert g.teacher_acc == pytest.approx(76.0)  # (75 + 77 + 76) / 3
    # a single run: no spread (None, shown "-")
    one = groups["tau_s=0.02"]
    assert one.final.mean == 58 and one.final.std is None and one.final.sem is None
    assert one.best.mean == 58


def test_selected_best_and_final_with_a_holdout(store):
    data = {**TINY_DATA, "holdout": 32}
    # val/acc is the holdout's accuracy, test/acc the test set's
    r1 = add_run(store, "h", cfg("r1", 0, data=data, method={"name": "none"}), val=[50, 60, 55], test=[52, 58, 61])
    r2 = add_run(store, "h", cfg("r2", 1, data=data, method={"name": "none"}), val=[50, 60, 60], test=[40, 45, 47])
    # without a holdout in the same study (another group): val/acc is the test accuracy
    r3 = add_run(store, "h", cfg("r3", 0, method={"name": "none"}), val=[30, 40, 35])
    table = study_table(store, "h")
    assert table.label_keys == ["data.holdout"]
    runs = {r.id: r for g in table.groups for r in g.runs}
    # r1: best holdout 60 at epoch 2 -> test 58 there; last epoch 61; best over epochs 61
    assert (runs[r1].final, runs[r1].selected, runs[r1].best) == (61, 58, 61)
    # r2: the holdout's best (60) first reached at epoch 2 -> test 45; final 47; best 47
    assert (runs[r2].final, runs[r2].selected, runs[r2].best) == (47, 45, 47)
    assert (runs[r3].final, runs[r3].selected, runs[r3].best) == (35, None, 40)
    held = by_label(table)["holdout=32"]
    assert held.holdout
    # selected 58, 45: mean 51.5, std sqrt(6.5^2 * 2 / 1) = sqrt(84.5)
    assert held.selected.mean == pytest.approx(51.5)
    assert held.selected.std == pytest.approx(9.192388155425117)
    assert held.final.mean == pytest.approx(54.0)  # (61 + 47) / 2
    text = render(table, "text")
    assert "selected" in text


def test_running_and_failed_runs_are_counted_not_averaged(store):
    add_run(store, "r", cfg("a", 0, method={"name": "none"}), val=[60, 70])
    add_run(store, "r", cfg("b", 1, method={"name": "none"}), val=[60, 74])
    running = add_run(store, "r", cfg("c", 2, method={"name": "none"}), status="running", val=[10])
    lock = RunLock(store.run_dir(running))  # its trainer, alive: the run stays running
    assert lock.acquire()
    try:
        add_run(store, "r", cfg("d", 3, method={"name": "none"}), status="queued")  # queued by this process
        add_run(store, "r", cfg("e", 4, method={"name": "none"}), status="failed", val=[5])
        table = study_table(store, "r")
    finally:
        lock.release()
    (g,) = table.groups
    assert g.counts == {"completed": 2, "running": 1, "queued": 1, "failed": 1}
    assert table.counts == {"completed": 2, "running": 1, "queued": 1, "failed": 1}
    assert g.n == 2 and len(g.runs) == 5
    assert g.final.values == [70, 74] and g.final.mean == pytest.approx(72.0)
    assert g.final.std == pytest.approx(2.8284271247461903)  # sqrt((4 + 4) / 1)
    text = render(table, "text")
    assert "2/5" in text and "1 running" in text and "1 queued" in text


def test_relative_improvement_over_kd_paper_numbers_and_formats(store):
    c100 = {"name": "cifar100", "download": False}
    pairs = {
        "resnet56": ("resnet20", {"none": [70, 72], "kd": [73, 75], "rrd": [75, 77]}),
        "resnet110": ("resnet32", {"none": [60, 60], "kd": [64, 64], "rrd": [65, 65]}),
    }
    for teacher, (student, finals) in pairs.items():
        for method, values in finals.items():
            for seed, final in enumerate(values):
                sections = {"student": {"arch": student}, "method": RRD if method == "rrd" else {"name": method}}
                if method != "none":
                    sections["teacher"] = {"checkpoint": "/nonexistent/t.pth", "arch": teacher}
                add_run(store, "ri", cfg(f"{method}{seed}", seed, data=c100, **sections), val=[50.0, final], teacher_acc=74.0)
    table = study_table(store, "ri")
    assert len(table.groups) == 6
    by = {(g.student_arch, g.method): g for g in table.groups}
    rrd20, rrd32 = by[("resnet20", "rrd")], by[("resnet32", "rrd")]
    # (76 - 74) / (74 - 71) = 2/3 and (65 - 64) / (64 - 60) = 1/4; their mean 11/24
    assert rrd20.ri == pytest.approx(2 / 3)
    assert rrd32.ri == pytest.approx(0.25)
    assert by[("resnet20", "kd")].ri is None and by[("resnet20", "none")].ri is None
    assert list(table.ri) == ["rrd"]
    assert table.ri["rrd"].mean == pytest.approx(11 / 24) and len(table.ri["rrd"].values) == 2
    # the paper's CIFAR-100 numbers: RRD resnet56 -> resnet20 is 70.71; vanilla resnet20 69.06
    assert rrd20.paper == 70.71 and rrd20.paper_diff == pytest.approx(76 - 70.71)
    assert by[("resnet20", "none")].paper == 69.06 and by[("resnet32", "kd")].paper == 73.08
    assert rrd20.teacher_acc == 74.0

    # json: parses back with the same (unrounded) numbers, run ids and per-run values
    data = json.loads(render(table, "json"))
    assert data["study"] == "ri" and len(data["groups"]) == 6
    for g, d in zip(table.groups, data["groups"]):
        assert d["label"] == g.label and d["run_ids"] == g.run_ids
        assert d["final"]["mean"] == g.final.mean and d["final"]["std"] == g.final.std
        assert d["final"]["sem"] == g.final.sem and d["ri"] == g.ri
        assert [r["final"] for r in d["runs"]] == [r.final for r in g.runs]
    assert data["ri_by_method"]["rrd"]["mean"] == table.ri["rrd"].mean
    # csv: a header and one row per group, numbers unrounded
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert len(rows) == 6
    row = next(r for r in rows if r["group"] == rrd20.label)
    assert float(row["final_mean"]) == rrd20.final.mean and float(row["ri"]) == rrd20.ri
    assert row["run_ids"].split() == rrd20.run_ids
    # text: within 80 columns, every final mean whole
    text = render(table, "text")
    assert max(len(line) for line in text.splitlines()) <= 80
    for g in table.groups:
        assert f"{g.final.mean:.2f}" in text
    assert "0.46" in text  # the RI averaged over the two pairs
    markdown = render(table, "markdown")
    assert "| group |" in markdown and "best (over epochs)" in markdown and "76.00 ± 1.41" in markdown
    latex = render(table, "latex")
    assert r"\begin{tabular}" in latex and r"76.00 $\pm$ 1.41" in latex and r"\end{tabular}" in latex


def test_matrix_of_a_two_key_grid(store):
    grid = {"method.tau_s": [0.02, 0.04], "method.tau_t": [0.1, 0.2]}
    store.save_study("m", "m.yaml", {"name": "m", "grid": grid, "seeds": [0]})
    finals = {(0.02, 0.1): 61.0, (0.02, 0.2): 62.0, (0.04, 0.1): 63.0, (0.04, 0.2): 64.5}
    for (tau_s, tau_t), final in finals.items():
        point = {"preset": "p.yaml", "grid": {"method.tau_s": tau_s, "method.tau_t": tau_t}, "seed": 0}
        config = cfg("x", 0, teacher=TEACHER, method={**RRD, "tau_s": tau_s, "tau_t": tau_t})
        add_run(store, "m", config, val=[10.0, final], point=point)
    table = study_table(store, "m")
    m = table.matrix
    assert m is not None and (m.row_key, m.col_key) == ("method.tau_s", "method.tau_t")
    assert m.rows == [0.02, 0.04] and m.cols == [0.1, 0.2]
    assert m.means() == [[61.0, 62.0], [63.0, 64.5]]
    assert by_label(table)["tau_s=0.04 tau_t=0.2"].final.mean == 64.5
    text = render(table, "text")
    assert "final (mean) by tau_s (rows) and tau_t (columns)" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert json.loads(render(table, "json"))["matrix"]["final_mean"] == [[61.0, 62.0], [63.0, 64.5]]
    assert r"tau\_s=0.04 tau\_t=0.2 & 1 & 64.50" in render(table, "latex")  # escaped for TeX
    for fmt in FORMATS:
        assert render(table, fmt).endswith("\n")


def test_wide_text_drops_columns_not_numbers(store):
    """Holdout, teacher, paper and RI columns together with long labels: still 80 columns."""
    data = {"name": "cifar100", "download": False, "holdout": 5000}
    teacher = {"checkpoint": "/nonexistent/t.pth", "arch": "resnet56"}
    for method, final in (("none", 70.123), ("kd", 72.5), ("rrd", 74.25)):
        for seed in (0, 1):
            sections = {"student": {"arch": "resnet20"}, "method": RRD if method == "rrd" else {"name": method}}
            if method != "none":
                sections["teacher"] = teacher
            add_run(
                store, "w", cfg("x", seed, data=data, **sections),
                val=[50.0, 60.0 + seed], test=[40.0, final + seed], teacher_acc=72.0,
            )  # fmt: skip
    table = study_table(store, "w")
    text = render(table, "text")
    assert max(len(line) for line in text.splitlines()) <= 80
    for g in table.groups:
        assert f"{g.final.mean:.2f}±{g.final.std:.2f}" in text
    assert by_label(table)  # labels are the method (weights follow from it)
    assert table.label_keys == ["method.name"]


def test_teacher_runs_are_left_out_but_give_the_teacher_accuracy(store):
    teacher = add_run(
        store, "t", cfg("teacher", 0, student={"arch": "resnet14"}, method={"name": "none"}),
        val=[70.0, 80.0], point={"role": "teacher"},
    )  # fmt: skip
    add_run(store, "t", cfg("s", 0, teacher=TEACHER, method={"name": "kd"}), val=[60.0, 66.0], teacher_run=teacher)
    table = study_table(store, "t")
    (g,) = table.groups
    assert g.method == "kd" and g.n == 1
    assert [t.id for t in table.teachers] == [teacher]
    assert g.teacher_acc == 80.0  # not measured by the student: the study's teacher run's final accuracy
    assert g.label == "kd resnet14->resnet8"  # nothing varies: the method and the pair


def test_group_curves_mean_and_std_per_epoch(store):
    add_run(store, "c", cfg("a", 0, method={"name": "none"}), val=[60, 71, 70])
    add_run(store, "c", cfg("b", 1, method={"name": "none"}), val=[65, 72])
    (g,) = study_table(store, "c").groups
    curve = group_curves(store, g, "val/acc")
    assert [e for e, _, _ in curve] == [1.0, 2.0, 3.0]
    assert curve[0][1] == pytest.approx(62.5) and curve[0][2] == pytest.approx(3.5355339059327378)  # sqrt(12.5)
    assert curve[1][1] == pytest.approx(71.5) and curve[1][2] == pytest.approx(0.7071067811865476)  # sqrt(0.5)
    assert curve[2] == (3.0, 70.0, None)  # one run only
    assert group_curves(store, g, "train/loss") == []


def test_unknown_study_names_the_known_ones(store):
    store.save_study("alpha", "a.yaml", {"name": "alpha"})
    with pytest.raises(StoreError) as info:
        study_table(store, "nope")
    message = str(info.value)
    assert "\n" not in message and "nope" in message and "alpha" in message and "rrdtui studies" in message


def test_empty_study_renders(store):
    store.save_study("e", "e.yaml", {"name": "e", "grid": {}})
    table = study_table(store, "e")
    assert table.groups == [] and table.matrix is None
    for fmt in FORMATS:
        assert render(table, fmt)
    with pytest.raises(ValueError):
        render(table, "html")


def test_relative_improvement_is_one_formula():
    from rrdtui.tui import model

    assert model.relative_improvement is relative_improvement
    assert relative_improvement(74.48, 73.33, 72.50) == pytest.approx(1.15 / 0.83)
    assert relative_improvement(74.0, 73.0, 73.0) is None
    assert not math.isnan(relative_improvement(1.0, 2.0, 3.0))
