"""The CLI end to end: `rrdtui run` starts the real trainer process, and every bad input is refused."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rrdtui.cli import app
from rrdtui.store import Store

from conftest import TINY_DATA, TINY_TRAIN, write_preset

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real `rrdtui run` of the tiny student: its teacher trains first, in the trainer process."""
    tmp = tmp_path_factory.mktemp("cli")
    presets = tmp / "presets"
    presets.mkdir()
    write_preset(presets, "tiny_teacher", data=TINY_DATA, student={"arch": "resnet14"}, method={"name": "none"},
                 optim={"lr": 0.05, "milestones": [1]}, train=TINY_TRAIN)
    student = write_preset(presets, "tiny_student", data=TINY_DATA, teacher={"preset": "tiny_teacher.yaml"},
                           student={"arch": "resnet8"}, method={"name": "rrd+kd", "queue_size": 100},
                           optim={"lr": 0.05, "milestones": [1]}, train=TINY_TRAIN)
    runs = tmp / "runs"
    result = invoke("run", student, "--runs", runs)
    return {"result": result, "runs": runs, "student": student, "tmp": tmp}


def test_run_trains_the_teacher_first_then_the_student(trained):
    result = trained["result"]
    assert result.exit_code == 0, result.output
    assert "has no completed run: training it first" in result.output
    store = Store(trained["runs"])
    rows = store.list_runs()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    student = next(r for r in rows if r["kind"] == "distill")
    teacher = next(r for r in rows if r["kind"] == "train")
    assert student["teacher_run"] == teacher["id"] and student["teacher_arch"] == "resnet14"
    assert student["teacher_acc"] is not None
    latest = store.latest(student["id"])
    for name in ("train/loss", "train/loss_ce", "train/loss_kd", "train/loss_rrd", "train/lr", "train/acc",
                 "val/acc", "val/loss", "train/throughput", "sim/agreement", "sim/cka", "rrd/entropy_t", "rrd/entropy_s"):
        assert name in latest, name
    for row in (student, teacher):
        folder = Path(row["run_dir"])
        assert (folder / "last.pt").exists() and (folder / "best.pt").exists() and (folder / "train.log").exists()
        assert json.loads((folder / "config.json").read_text())["name"] == row["name"]
    assert "val/acc" in result.output and "rrdtui show" in result.output  # the closing summary


def test_a_second_student_reuses_the_completed_teacher(trained):
    result = invoke("run", trained["student"], "--runs", trained["runs"], "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    assert "reused from run" in result.output
    assert len(Store(trained["runs"]).list_runs()) == 3


def test_ls_show_and_export(trained):
    runs = trained["runs"]
    listing = json.loads(invoke("ls", "--json", "--runs", runs).stdout)
    assert {"id", "name", "status", "epoch", "epochs", "metrics"} <= set(listing[0])
    student_id = next(r["id"] for r in listing if r["method"] == "rrd+kd" and r["epochs"] == 2)
    shown = json.loads(invoke("show", student_id[:5], "--json", "--runs", runs).stdout)
    assert {"id", "name", "status", "epoch", "epochs", "pid", "metrics", "config"} <= set(shown)
    assert shown["epoch"] == shown["epochs"] == 2 and shown["config"]["method"]["tau_s"] == 0.04
    text = invoke("ls", "--runs", runs).stdout
    assert student_id in text and "completed" in text

    rows = list(csv.DictReader(io.StringIO(invoke("export", student_id, "--format", "csv", "--runs", runs).stdout)))
    assert set(rows[0]) == {"run_id", "name", "step", "epoch", "value", "time"}
    keys = [(r["name"], int(r["step"])) for r in rows]
    assert len(keys) == len(set(keys))  # no duplicates
    as_json = json.loads(invoke("export", student_id, "--format", "json", "--runs", runs).stdout)
    assert len(as_json) == len(rows)


def test_unknown_run_is_one_line(trained):
    result = invoke("show", "nope", "--runs", trained["runs"])
    assert result.exit_code == 2 and result.stderr.strip() == f"rrdtui: error: no run 'nope' in {trained['runs']}/rrdtui.db (see `rrdtui ls`)"


BAD_INPUTS = [
    ("method: {name: none, tua_s: 1}\n", [], "unknown key 'method.tua_s'"),
    ("method: {name: none}\ntrain: {epochs: ten}\n", [], "train.epochs must be an integer"),
    ("method: {name: none, tau_s: -1}\n", [], "method.tau_s must be > 0"),
    ("method: {name: none}\nstudent: {arch: resnet9000}\n", [], "student.arch: unknown value 'resnet9000'"),
    ("method: {name: none}\ndata: {name: mnist}\n", [], "data.name: unknown value 'mnist'"),
    ("method: {name: none\n", [], "YAML syntax error"),
    ("method: {name: kd}\nteacher: {checkpoint: /no/such/teacher.pth, arch: resnet8}\n", [], "teacher.checkpoint '/no/such/teacher.pth' not found"),
    ("method: {name: kd}\nteacher: {run: deadbeef}\n", [], "teacher.run: no run 'deadbeef'"),
    ("method: {name: none}\n", ["method.tau_t=0"], "method.tau_t must be > 0"),
]


@pytest.mark.parametrize("text, overrides, expected", BAD_INPUTS)
def test_bad_input_is_refused_in_one_line_without_writing_a_run(tmp_path, text, overrides, expected):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    args = ["run", preset, "--runs", tmp_path / "runs"]
    for override in overrides:
        args += ["--set", override]
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("rrdtui: error: ")
    assert Store(tmp_path / "runs").list_runs() == []


def test_missing_preset_file(tmp_path):
    result = invoke("run", tmp_path / "nothing.yaml", "--runs", tmp_path / "runs")
    assert result.exit_code == 2 and "preset file not found" in result.stderr


def test_presets_lists_the_demo(tmp_path):
    root = Path(__file__).resolve().parents[1]
    result = invoke("presets", "--dir", root / "presets")
    assert result.exit_code == 0 and "demo " in result.stdout and "rrd+kd" in result.stdout
