"""Daily use of the CLI (issue 15): mistakes caught before a run row, presets by name, 80 columns,
`show` in full, a quick start-up, notes, tags, filters and exports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rrdtui import presets as presets_module
from rrdtui.cli import app
from rrdtui.config import ConfigError, load_preset
from rrdtui.launcher import launch
from rrdtui.store import Store

from conftest import TINY_DATA, TINY_TRAIN, run, write_preset

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *expected: str) -> str:
    """Exit code 2, one line on stderr naming each expected part, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rrdtui: error: "), result.stderr
    assert "Traceback" not in result.output
    for part in expected:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def no_runs(runs: Path) -> bool:
    return not (runs / "rrdtui.db").exists() or Store(runs).list_runs() == []


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A tiny teacher preset (plain cross-entropy on the synthetic data, 2 epochs)."""
    folder = tmp_path / "presets"
    folder.mkdir()
    return write_preset(folder, "tiny", data=TINY_DATA, student={"arch": "resnet8"}, method={"name": "none"},
                        optim={"lr": 0.05, "milestones": [1]}, train=TINY_TRAIN)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 1. A device the machine lacks, a milestone the run never reaches: refused before a run row
# ---------------------------------------------------------------------------------------------


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("device", ["cuda:99", pytest.param("cuda", marks=pytest.mark.skipif(
    "cuda_available()", reason="this machine has CUDA"))])  # fmt: skip
def test_a_cuda_device_the_machine_lacks_is_refused_before_a_run_row(tmp_path, tiny, device):
    runs = tmp_path / "runs"
    line = one_line_error(invoke("run", tiny, "--set", f"train.device={device}", "--runs", runs), "train.device", device)
    assert "use --set train.device=cpu" in line or "choose one of them" in line
    assert no_runs(runs)


def test_the_dashboard_launch_runs_the_same_device_check(tmp_path, tiny):
    from rrdtui.preflight import check_launch

    runs = tmp_path / "runs"
    cfg = load_preset(tiny, ["train.device=cuda:99"])
    with pytest.raises(ConfigError, match="train.device is 'cuda:99'"):
        check_launch(cfg, str(tiny), Store(runs))  # what the launch form can call as you type
    with pytest.raises(ConfigError, match="train.device is 'cuda:99'"):
        launch(str(tiny), ["train.device=cuda:99"], runs)  # what its launch button calls
    assert no_runs(runs)


def test_a_malformed_cuda_device_is_refused_by_the_configuration(tmp_path, tiny):
    one_line_error(invoke("run", tiny, "--set", "train.device=cuda:x", "--runs", tmp_path / "runs"),
                   "train.device: unknown value 'cuda:x'")  # fmt: skip


def test_a_milestone_beyond_the_last_epoch_is_refused_with_the_fix(tmp_path, tiny):
    runs = tmp_path / "runs"
    line = one_line_error(
        invoke("run", tiny, "--set", "optim.milestones=[1,5]", "--runs", runs),
        "optim.milestones [1, 5]", "train.epochs 2", "never decays", "--set optim.milestones=[1]",
    )
    assert str(tiny) in line
    assert no_runs(runs)
    # The default milestones (150, 180, 210) under a short run: the case that bites.
    one_line_error(invoke("run", tiny, "--set", "optim.milestones=[150,180,210]", "--runs", runs), "150 is beyond")
    load_preset(tiny, ["optim.milestones=[2]"])  # one at the last epoch is the end of training: fine
    load_preset(tiny, ["optim.milestones=[]"])  # no decay at all: fine


# ---------------------------------------------------------------------------------------------
# 2. Presets by name: ./presets, then $RRDTUI_PRESETS, then the installed ones
# ---------------------------------------------------------------------------------------------


def test_run_takes_a_preset_name_from_the_presets_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "presets"
    local.mkdir()
    write_preset(local, "mine", method={"name": "none"})
    mine_env = tmp_path / "elsewhere"
    mine_env.mkdir()
    write_preset(mine_env, "theirs", method={"name": "none"})
    write_preset(mine_env, "mine", method={"name": "kd"})  # shadowed by ./presets/mine.yaml
    monkeypatch.setenv("RRDTUI_PRESETS", str(mine_env))

    assert presets_module.resolve_preset("mine") == Path("presets/mine.yaml")
    assert presets_module.resolve_preset("mine.yaml") == Path("presets/mine.yaml")
    assert presets_module.resolve_preset("theirs") == mine_env / "theirs.yaml"
    assert presets_module.resolve_preset("demo").parent.resolve() == (ROOT / "presets").resolve()  # installed
    # The name reaches the file: a refused override names the file it was found as.
    for name, where in (("theirs", mine_env / "theirs.yaml"), ("demo", "demo.yaml")):
        line = one_line_error(invoke("run", name, "--set", "train.device=bogus", "--runs", tmp_path / "runs"))
        assert str(where) in line and "train.device: unknown value 'bogus'" in line
    one_line_error(invoke("bench", "theirs", "--set", "train.device=bogus"), str(mine_env / "theirs.yaml"))

    line = one_line_error(invoke("run", "nosuch", "--runs", tmp_path / "runs"), "nosuch", "preset file not found")
    assert "presets/" in line and str(mine_env) in line
    one_line_error(invoke("run", "./nosuch.yaml", "--runs", tmp_path / "runs"), "preset file not found")

    listed = invoke("presets")
    assert listed.exit_code == 0
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert {"mine", "theirs", "demo"} <= set(names) and names.count("mine") == 1
    mine_line = next(line for line in listed.stdout.splitlines() if line.startswith("mine "))
    assert " none " in mine_line  # ./presets/mine.yaml, not $RRDTUI_PRESETS's kd one


# ---------------------------------------------------------------------------------------------
# 3. 80 columns: the progress bar, `ls` and `presets`
# ---------------------------------------------------------------------------------------------

PROGRESS_ROW = {"id": "a1b2c3d4", "name": "cifar100_resnet32x4-resnet8x4", "status": "running", "epoch": 3,
                "epochs": 240, "step": 1234, "total_steps": 187680}  # fmt: skip
PROGRESS_LATEST = {"val/acc": 45.61, "train/loss": 1.2345, "train/acc": 50.2, "train/throughput": 5123.0}


def render_progress(width: int, rows: list[dict]) -> list[str]:
    """The bar as a terminal `width` wide shows it, after a few updates 1 s apart (a counted clock)."""
    import io
    import itertools

    from rich.console import Console

    from rrdtui.progress import make_progress, show

    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    clock = itertools.count(0.0, 1.0)
    progress = make_progress(console, get_time=lambda: next(clock))
    tasks: dict[str, int] = {}
    for row in rows:
        for step in (row["step"] - 200, row["step"] - 100, row["step"]):
            show(progress, tasks, {**row, "step": step}, PROGRESS_LATEST)
    console.print(progress.get_renderable())
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 100, 140])
def test_the_progress_bar_keeps_its_bar_steps_and_time_left_at_80_columns(width):
    done = {**PROGRESS_ROW, "id": "ffff0000", "name": "teacher", "status": "completed", "step": 187680, "epoch": 240}
    running, finished = render_progress(width, [PROGRESS_ROW, done])
    for line in (running, finished):
        assert len(line) <= width, (len(line), line)
        assert line.split()[2:3] and "/187680" in line  # the step count, whole
        assert re.search(r" \d+:\d\d:\d\d$", line), line  # time left, last
    assert "1234/187680" in running and "━" in finished
    assert "3/240" in running and "val 45.6" in running  # epoch and accuracy before the rest
    assert "[completed]" in finished  # the status (rich markup once swallowed it)
    if width >= 140:
        assert "5123 img/s" in running and "train 50.2%" in running


NUMBER = r"\d[\d.]*(?:/\d+)?"  # 45.6, 1.234, 3/240


def test_the_progress_words_are_shortened_then_dropped_never_cut():
    from rrdtui.progress import describe

    whole = describe(PROGRESS_ROW, PROGRESS_LATEST)
    assert whole == "cifar100_resnet32x4-resnet8x4  epoch 3/240  loss 1.234  train 50.2%  val 45.6%  5123 img/s"
    numbers = set(re.findall(NUMBER, whole))
    shown = []
    for room in range(len(whole)):
        text = describe(PROGRESS_ROW, PROGRESS_LATEST, room)
        assert len(text) <= room and set(re.findall(NUMBER, text)) <= numbers, (room, text)
        shown.append(text)
    assert "epoch 3/240  loss 1.234  train 50.2%  val 45.6%  5123 img/s" in shown  # the name goes first
    assert "ep 3/240" in shown and "" in shown  # at last the epoch alone, then nothing


def make_runs(runs: Path) -> dict[str, str]:
    """A store of finished runs (written as the trainer writes them, without training): two RRD runs
    that differ only in tau_s, a FitNet run, a KD run with a note and tags."""
    from rrdtui.config import from_mapping

    store = Store(runs)
    ids = {}
    for key, name, method, tau_s, teacher, student, acc in (
        ("rrd_a", "cifar100_resnet32x4-resnet8x4", "rrd+kd", 0.04, "resnet32x4", "resnet8x4", 74.12),
        ("rrd_b", "cifar100_resnet32x4-resnet8x4", "rrd+kd", 0.035, "resnet32x4", "resnet8x4", 74.12),
        ("fitnet", "cifar100_wrn_40_2-ShuffleV1", "fitnet+kd", 0.04, "wrn_40_2", "ShuffleV1", 100.0),
        ("kd", "kd_baseline", "kd", 0.04, "resnet32x4", "resnet8x4", 73.5),
    ):
        cfg = from_mapping({"name": name, "data": {"name": "cifar100"}, "student": {"arch": student},
                            "teacher": {"checkpoint": "/t.pth", "arch": teacher, "expected_acc": 79.42},
                            "method": {"name": method, "tau_s": tau_s}}, "test")  # fmt: skip
        run_id = ids[key] = store.create_run(cfg.to_dict())
        store.update_run(run_id, status="completed", epoch=240, step=187680, total_steps=187680, best_acc=acc,
                         teacher_acc=79.1, started=1.7e9, ended=1.7e9 + 3600, pid=None)  # fmt: skip
        store.insert_metrics([(run_id, 187680, 240.0, "val/acc", acc - 0.25, 1.7e9)])
    return ids


@pytest.mark.parametrize("columns", [80, 60, 200])
def test_ls_fits_the_terminal_and_shows_the_temperatures_whole(tmp_path, monkeypatch, columns):
    runs = tmp_path / "runs"
    ids = make_runs(runs)
    monkeypatch.setenv("COLUMNS", str(columns))
    result = invoke("ls", "--runs", runs)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), [len(line) for line in lines]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert " 0.04/0.1 " in by_id[ids["rrd_a"]] and " 0.035/0.1 " in by_id[ids["rrd_b"]]
    assert by_id[ids["rrd_a"]].replace("0.04/0.1 ", "") != by_id[ids["rrd_b"]].replace("0.035/0.1", "")
    assert " - " in by_id[ids["kd"]]  # KD has no use for τs/τt
    assert "100.00" in by_id[ids["fitnet"]] and "completed" in by_id[ids["fitnet"]]  # numbers whole
    if columns >= 80:
        assert "240/240" in by_id[ids["kd"]] and "73.25" in by_id[ids["kd"]]
    if columns >= 200:
        assert "cifar100_resnet32x4-resnet8x4" in by_id[ids["rrd_a"]] and "resnet32x4 -> resnet8x4" in by_id[ids["kd"]]


@pytest.mark.parametrize("columns", [80, 100])
def test_presets_fit_the_terminal_with_names_and_numbers_whole(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    result = invoke("presets", "--dir", ROOT / "presets")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    names = {line.split()[0] for line in lines if line.strip()}
    assert {p.stem for p in (ROOT / "presets").glob("*.yaml")} <= names
    pair = next(line for line in lines if line.split() and line.split()[0] == "cifar100_resnet32x4-resnet8x4")
    assert "RRD 74.48" in pair and pair.endswith("79.42")


# ---------------------------------------------------------------------------------------------
# 4. `show`: the best accuracy, the whole configuration, the teacher check; `run`'s summary too
# ---------------------------------------------------------------------------------------------

# What the trainer writes when a teacher measures more than a point below teacher.expected_acc.
TEACHER_CHECK = ("TEACHER CHECK: measured 45.00% but teacher.expected_acc is 79.42% (more than 1 point lower): "
                 "wrong checkpoint, architecture or data set?")  # fmt: skip


def test_show_has_the_best_accuracy_the_resolved_configuration_and_the_teacher_check(tmp_path):
    runs = tmp_path / "runs"
    ids = make_runs(runs)
    Store(runs).event(ids["rrd_b"], "warning", TEACHER_CHECK)
    rrd = invoke("show", ids["rrd_b"], "--runs", runs).stdout
    assert "best val/acc 74.12" in rrd and "(latest 73.87)" in rrd
    assert "teacher accuracy (measured): 79.10%, expected 79.42%" in rrd
    assert TEACHER_CHECK in rrd
    assert "tau_s=0.035" in rrd and "tau_t=0.1" in rrd
    config = rrd[rrd.index("configuration (resolved):"):].splitlines()[1:]
    values = dict(line.split(None, 1) if len(line.split()) > 1 else (line.strip(), "") for line in config)
    for key, value in (("method.tau_s", "0.035"), ("optim.milestones", "[150, 180, 210]"), ("train.epochs", "240"),
                       ("data.name", "cifar100"), ("teacher.expected_acc", "79.42"), ("seed", "0")):  # fmt: skip
        assert values[key] == value, key
    kd = invoke("show", ids["kd"], "--runs", runs).stdout
    assert "tau" not in kd and "τ" not in kd  # KD has no use for RRD's temperatures
    assert "kd_T=4.0" in kd and "method.kd_T" in kd and "TEACHER CHECK" not in kd
    shown = invoke("show", ids["rrd_b"], "--json", "--runs", runs).stdout
    assert __import__("json").loads(shown)["teacher_check"] == TEACHER_CHECK


def test_the_run_summary_says_when_the_teacher_check_failed(tmp_path, capsys):
    from rrdtui.cli import summarise

    runs = tmp_path / "runs"
    ids = make_runs(runs)
    store = Store(runs)
    store.event(ids["rrd_a"], "warning", TEACHER_CHECK)
    summarise(store, [store.get_run(ids["rrd_b"]), store.get_run(ids["rrd_a"])])
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if ids["rrd_a"] in line and "best" in line)
    assert "(teacher 79.10: TEACHER CHECK failed)" in line
    assert lines[lines.index(line) + 1].strip() == TEACHER_CHECK
    assert "(teacher 79.10)" in next(line for line in lines if ids["rrd_b"] in line)


# ---------------------------------------------------------------------------------------------
# 5. Start-up: commands that do not read the store do not import it
# ---------------------------------------------------------------------------------------------

HEAVY = ("sqlite_utils", "numpy", "torch", "rrdtui.store")


def test_the_cli_and_its_help_import_neither_the_store_nor_numpy_nor_torch():
    code = (
        "import sys\n"
        "import rrdtui.cli\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
        "try:\n"
        "    rrdtui.cli.app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[]" and lines[-1] == "[]", lines
    assert any(line.lstrip().startswith("run ") for line in lines)  # the help itself


def test_errors_are_still_one_line_with_the_store_and_configuration_imported_late(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: {name: none, tua_s: 1}\n")
    one_line_error(invoke("run", bad, "--runs", tmp_path / "runs"), "unknown key 'method.tua_s'")  # ConfigError
    one_line_error(invoke("show", "nope", "--runs", tmp_path / "runs"), "no run 'nope'")  # StoreError


# ---------------------------------------------------------------------------------------------
# 6. Help text, `rm`'s question, the demo teacher's comment
# ---------------------------------------------------------------------------------------------


def test_help_names_its_arguments_plainly():
    run_help = invoke("run", "--help").stdout
    assert "run [OPTIONS] {PRESET}" in run_help and "{preset}" not in run_help
    assert "--set KEY=VALUE" in run_help and "list[str]" not in run_help.split("Options:")[1]
    for command in ("rm", "plot", "export"):
        text = invoke(command, "--help").stdout
        assert "{RUN}..." in text and "{RUN...}" not in text, text
    assert "--set KEY=VALUE" in invoke("bench", "--help").stdout and "{PRESET}" in invoke("bench", "--help").stdout
    assert "--set KEY=VALUE" in invoke("transfer", "--help").stdout


def test_rm_asks_about_its_folder_for_one_run_and_their_folders_for_more(tmp_path):
    runs = tmp_path / "runs"
    ids = make_runs(runs)
    one = runner.invoke(app, ["rm", ids["kd"], "--runs", str(runs)], input="n\n")
    assert one.exit_code == 1 and "and its folder?" in one.output
    two = runner.invoke(app, ["rm", ids["kd"], ids["fitnet"], "--runs", str(runs)], input="n\n")
    assert two.exit_code == 1 and "and their folders?" in two.output
    assert len(Store(runs).list_runs()) == 4  # nothing removed


def test_the_demo_presets_comments_agree_with_their_values():
    for name in ("demo.yaml", "demo_teacher.yaml"):
        text = (ROOT / "presets" / name).read_text()
        classes = load_preset(ROOT / "presets" / name).data.num_classes
        for said in re.findall(r"#.*?(\d+) classes", text):
            assert int(said) == classes, (name, said, classes)


# ---------------------------------------------------------------------------------------------
# 7. `pytest -q` keeps its summary line (an -q in the project's addopts made it -qq)
# ---------------------------------------------------------------------------------------------


def test_pytest_quiet_still_prints_the_summary_line(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), str(tmp_path / "test_one.py")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^1 passed", result.stdout, re.M), result.stdout


# ---------------------------------------------------------------------------------------------
# 8. export-model, notes, tags, ls --filter, export --wide and --format tensorboard
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny completed run (resnet8, 1 epoch on the synthetic data), trained in process as the
    trainer trains it."""
    from rrdtui.config import from_mapping

    folder = tmp_path_factory.mktemp("daily")
    cfg = from_mapping({"name": "tiny", "data": TINY_DATA, "student": {"arch": "resnet8"}, "method": {"name": "none"},
                        "optim": {"lr": 0.05, "milestones": [1]}, "train": {**TINY_TRAIN, "epochs": 1}}, "test")  # fmt: skip
    _, run_id, outcome = run(folder, cfg)
    assert outcome.status == "completed"
    runs = folder / "runs"
    return {"runs": runs, "id": run_id}


def test_export_model_writes_the_format_repdistiller_loads(trained, tmp_path):
    import torch

    from rrdtui.train.models import build_model
    from rrdtui.train.teacher import load_teacher

    store = Store(trained["runs"])
    row = store.get_run(trained["id"])
    out = tmp_path / "student.pth"
    result = invoke("export-model", trained["id"][:5], "-o", out, "--runs", trained["runs"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: resnet8, 4 classes" in result.stdout
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"model", "arch", "num_classes", "acc", "epoch"}
    assert (saved["arch"], saved["num_classes"], saved["epoch"]) == ("resnet8", 4, 1)
    assert saved["acc"] == pytest.approx(row["best_acc"])
    build_model("resnet8", 4).load_state_dict(saved["model"], strict=True)
    load_teacher("resnet8", str(out), 4, 3)  # and rrdtui takes it as a teacher checkpoint

    final = tmp_path / "final.pth"
    assert invoke("export-model", trained["id"], "--last", "-o", final, "--runs", trained["runs"]).exit_code == 0
    assert torch.load(final, weights_only=True)["acc"] == pytest.approx(store.latest(trained["id"])["val/acc"])


def test_export_model_refusals_are_one_line_and_write_nothing(trained, tmp_path):
    runs = tmp_path / "runs"
    ids = make_runs(runs)  # rows without checkpoints
    one_line_error(invoke("export-model", ids["kd"], "-o", tmp_path / "x.pth", "--runs", runs), "best.pt", "yet")
    one_line_error(invoke("export-model", trained["id"], "-o", tmp_path, "--runs", trained["runs"]), "is a folder")
    one_line_error(invoke("export-model", "nope", "--runs", runs), "no run 'nope'")
    assert not (tmp_path / "x.pth").exists()


def test_notes_and_tags_show_in_ls_and_show_and_filter_the_list(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    runs = tmp_path / "runs"
    ids = make_runs(runs)
    assert invoke("note", ids["rrd_b"], "sharper student: tau_s 0.035", "--runs", runs).exit_code == 0
    assert invoke("tag", ids["rrd_b"], "sweep", "tau", "--runs", runs).exit_code == 0
    assert invoke("tag", ids["rrd_a"], "sweep", "--runs", runs).exit_code == 0
    assert invoke("tag", ids["rrd_b"], "tau", "--remove", "--runs", runs).stdout.strip() == f"tags of {ids['rrd_b']}: sweep"
    assert invoke("note", ids["rrd_b"], "--runs", runs).stdout.strip() == "sharper student: tau_s 0.035"
    one_line_error(invoke("tag", ids["rrd_b"], "a,b", "--runs", runs), "tag 'a,b'")

    listing = invoke("ls", "--runs", runs).stdout
    line_b = next(line for line in listing.splitlines() if line.startswith(ids["rrd_b"]))
    assert "sweep" in line_b and "sharper student: tau_s 0.035" in line_b
    shown = invoke("show", ids["rrd_b"], "--runs", runs).stdout
    assert "  tags: sweep" in shown and "  note: sharper student: tau_s 0.035" in shown

    def listed(*filters: str) -> set[str]:
        args = [a for f in filters for a in ("--filter", f)]
        return {r["id"] for r in __import__("json").loads(invoke("ls", "--json", *args, "--runs", runs).stdout)}

    assert listed("tau_s=0.035") == {ids["rrd_b"]} == listed("method.tau_s=3.5e-2")
    assert listed("method=rrd+kd") == {ids["rrd_a"], ids["rrd_b"]}
    assert listed("tag=sweep") == {ids["rrd_a"], ids["rrd_b"]} and listed("tag=sweep", "tau_s=0.04") == {ids["rrd_a"]}
    assert listed("status=completed") == set(ids.values()) and listed("status=running") == set()
    assert listed("student.arch=ShuffleV1") == {ids["fitnet"]} == listed("arch=ShuffleV1")  # student or teacher
    assert listed("optim.milestones=[150, 180, 210]") == set(ids.values())
    assert "no runs in" in invoke("ls", "--filter", "tag=nothing", "--runs", runs).stdout
    one_line_error(invoke("ls", "--filter", "tau_x=1", "--runs", runs), "--filter tau_x=1", "did you mean 'tau_")
    one_line_error(invoke("ls", "--filter", "tau_s", "--runs", runs), "expected key=value")


def test_export_wide_is_one_row_per_run_and_step(trained):
    import csv
    import io

    runs, run_id = trained["runs"], trained["id"]
    long = list(csv.DictReader(io.StringIO(invoke("export", run_id, "--runs", runs).stdout)))
    result = invoke("export", run_id, "--format", "csv", "--wide", "--runs", runs)
    assert result.exit_code == 0
    wide = list(csv.DictReader(io.StringIO(result.stdout)))
    names = sorted({r["name"] for r in long})
    assert list(wide[0]) == ["run_id", "step", "epoch", *names]
    assert len(wide) == len({(r["run_id"], r["step"]) for r in long})
    by_step = {row["step"]: row for row in wide}
    for r in long:
        assert float(by_step[r["step"]][r["name"]]) == pytest.approx(float(r["value"]))
    val_steps = {r["step"] for r in long if r["name"] == "val/acc"}
    assert all((row["val/acc"] != "") == (row["step"] in val_steps) for row in wide)  # empty where none


def test_export_tensorboard_without_the_package_says_how_to_install_it(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    out = tmp_path / "tb"
    one_line_error(invoke("export", trained["id"], "--format", "tensorboard", "-o", out, "--runs", trained["runs"]),
                   "pip install tensorboard", "uv add tensorboard")  # fmt: skip
    assert not out.exists()


def test_export_tensorboard_writes_event_files_tensorboard_reads(trained, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    result = invoke("export", trained["id"], "--format", "tensorboard", "-o", out, "--runs", trained["runs"])
    assert result.exit_code == 0, result.output
    [folder] = list(out.iterdir())
    events = EventAccumulator(str(folder))
    events.Reload()
    store = Store(trained["runs"])
    assert set(events.Tags()["scalars"]) == set(store.metric_names(trained["id"]))
    [(step, _, value)] = store.series(trained["id"], "val/acc")
    [scalar] = events.Scalars("val/acc")
    assert scalar.step == step and scalar.value == pytest.approx(value)
