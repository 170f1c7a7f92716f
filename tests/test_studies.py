"""Studies: study files expanded and refused, and the study runner with real trainer processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rrdtui.config import ConfigError
from rrdtui.store import Store
from rrdtui.studies.spec import load_study

from conftest import write_preset
from test_lifecycle import wait_for

TINY = {"name": "synthetic", "num_classes": 4, "train_size": 128, "val_size": 64, "probe_size": 32}
FAST = {"epochs": 1, "batch_size": 32, "device": "cpu", "log_every": 2}


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rrdtui.cli", *map(str, args)], capture_output=True, text=True, timeout=900, **kwargs
    )


@pytest.fixture
def presets(tmp_path: Path) -> Path:
    """A one-epoch tiny teacher and a student preset naming it (so the study trains the teacher)."""
    folder = tmp_path / "presets"
    folder.mkdir()
    write_preset(folder, "teacher", data=TINY, student={"arch": "resnet8"}, method={"name": "none"},
                 optim={"milestones": [1]}, train=FAST)  # fmt: skip
    write_preset(folder, "student", data=TINY, teacher={"preset": "teacher.yaml"}, student={"arch": "resnet8"},
                 method={"name": "kd", "queue_size": 64}, optim={"milestones": [1]}, train=FAST)  # fmt: skip
    (folder / "studies").mkdir()
    return folder


def study_file(folder: Path, name: str = "s", **body) -> Path:
    path = folder / "studies" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "presets": ["../student.yaml"], **body}, sort_keys=False))
    return path


# -- expansion and validation ------------------------------------------------------------------


def test_grid_times_seeds_expands_every_combination(presets):
    study = load_study(str(study_file(presets, grid={"method.name": ["kd", "rrd"], "method.tau_s": [0.02, 0.04]}, seeds=[0, 1, 2])))
    assert len(study.points) == 2 * 2 * 3
    combos = {(p.config.method.name, p.config.method.tau_s, p.config.seed) for p in study.points}
    assert len(combos) == 12
    assert {p.key() for p in study.points} == {p.key() for p in load_study(study.file).points}  # stable


def test_seeds_only_study_and_preset_by_name(presets, monkeypatch):
    monkeypatch.chdir(presets.parent)
    path = study_file(presets, presets=["student"], seeds=[3, 4])
    study = load_study(str(path))
    assert [p.config.seed for p in study.points] == [3, 4]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"grids": {"method.tau_s": [0.1]}}, "unknown key 'grids' (did you mean 'grid'?)"),
        ({"grid": {}}, "grid is empty"),
        ({"grid": {"method.tau_s": []}}, "grid.method.tau_s is empty"),
        ({"grid": {"method.tau_s": [0.04, -1]}}, "the run student tau_s=-1 is refused"),
        ({"grid": {"method.tau_z": [0.1]}}, "unknown key 'method.tau_z'"),
        ({"grid": {"seed": [1, 2]}}, "list seeds under seeds:"),
        ({"seeds": [0, 0]}, "lists a seed twice"),
        ({"seeds": "many"}, "seeds must be a list"),
        ({"presets": ["../nope.yaml"]}, "'../nope.yaml' not found"),
        ({"set": ["train.epochs=0"]}, "train.epochs must be > 0"),
    ],
)
def test_bad_study_files_are_refused_in_one_line(presets, body, message):
    with pytest.raises(ConfigError) as info:
        load_study(str(study_file(presets, **body)))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_refused_study_writes_nothing(tmp_path, presets):
    runs = tmp_path / "runs"
    path = study_file(presets, grid={"method.tau_s": [0.04, 0]})
    result = cli("study", path, "--runs", runs)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "tau_s must be > 0" in result.stderr, result.stderr
    store = Store(runs)
    assert store.list_runs() == [] and store.list_studies() == []


# -- the runner, with real trainers ---------------------------------------------------------------


def intervals(store: Store, name: str) -> list[tuple[float, float]]:
    return [(r["started"], r["ended"]) for r in store.study_runs(name)]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of runs whose [started, ended] spans overlap (from the store's records)."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = best = 0
    for _, change in edges:
        now += change
        best = max(best, now)
    return best


def test_a_study_trains_the_shared_teacher_once_respects_its_slots_and_continues(tmp_path, presets):
    runs = tmp_path / "runs"
    path = study_file(presets, grid={"method.name": ["kd", "rrd"]}, seeds=[0, 1])
    first = cli("study", path, "--slots", "2", "--runs", runs)
    assert first.returncode == 0, first.stdout + first.stderr
    store = Store(runs)
    rows = store.study_runs("s")
    teachers = [r for r in rows if json.loads(r["study_point"]) == {"role": "teacher"}]
    students = [r for r in rows if r not in teachers]
    assert len(teachers) == 1 and len(students) == 4
    assert all(r["status"] == "completed" for r in rows), [(r["id"], r["status"], r["error"]) for r in rows]
    assert {r["teacher_run"] for r in students} == {teachers[0]["id"]}
    assert all(s["started"] >= teachers[0]["ended"] for s in students)  # the teacher first
    assert most_at_once(intervals(store, "s")) <= 2

    again = cli("study", path, "--slots", "2", "--runs", runs)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert [r["id"] for r in store.study_runs("s")] == [r["id"] for r in rows]

    # The table: one group per method, N = 2 seeds, mean and std of the runs' final accuracies.
    table = json.loads(cli("table", "s", "--format", "json", "--runs", runs).stdout)
    assert sorted(g["method"] for g in table["groups"]) == ["kd", "rrd"]
    for group in table["groups"]:
        finals = [store.series(run_id, "val/acc")[-1][2] for run_id in group["run_ids"]]
        assert group["n"] == 2 and len(finals) == 2
        assert group["final"]["mean"] == pytest.approx((finals[0] + finals[1]) / 2)
        assert group["final"]["std"] == pytest.approx(abs(finals[0] - finals[1]) / 2**0.5)


def test_a_killed_study_resumes_its_runs_when_re_run_and_a_stopped_study_stops_every_run(tmp_path, presets):
    runs = tmp_path / "runs"
    long = {"epochs": 100, "batch_size": 16, "device": "cpu", "log_every": 1}
    write_preset(presets, "long", data=TINY, student={"arch": "resnet8"}, method={"name": "none"},
                 optim={"milestones": [50]}, train=long)  # fmt: skip
    path = study_file(presets, presets=["../long.yaml"], seeds=[0, 1])
    name = cli("study", path, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    store = Store(runs)
    # Epoch 2 begun: epoch 1's checkpoint is on disk (it is written before the epoch counter moves on).
    running = wait_for(lambda: [r for r in store.study_runs(name) if r["status"] == "running" and r["epoch"] >= 2],
                       what="a run of the study to be past its first checkpoint")  # fmt: skip
    victim = running[0]
    runner_pid = store.get_study(name)["pid"]
    os.kill(runner_pid, signal.SIGKILL)
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: store.get_run(victim["id"])["status"] == "crashed", what="the killed run to read crashed")
    wait_for(lambda: not store.study_runner_alive(store.get_study(name)), what="the runner's lock to drop")

    # Both crashed: the killed one, and the queued one its runner owned.
    again = cli("study", path, "--detach", "--runs", runs)
    assert again.returncode == 0, again.stderr
    assert "2 to resume, 0 new)" in again.stderr, again.stderr
    wait_for(lambda: any(e["message"].startswith("resumed from epoch") for e in store.events(victim["id"])),
             what="the crashed run to resume from its checkpoint")  # fmt: skip
    assert cli("stop", name, "--runs", runs).returncode == 0
    ended = wait_for(lambda: (rows := store.study_runs(name)) and all(r["status"] not in ("queued", "running") for r in rows) and rows,
                     what="every run of the stopped study to end")  # fmt: skip
    assert {r["status"] for r in ended} == {"stopped"}, [(r["id"], r["status"], r["error"]) for r in ended]
    assert [r["id"] for r in ended] == [r["id"] for r in store.study_runs(name)]
    events = [e["message"] for e in store.events(victim["id"])]
    assert "resume with the study requested" in events
    assert len(store.study_runs(name)) == 2  # resumed, not trained anew
    wait_for(lambda: not store.study_runner_alive(store.get_study(name)), what="the runner to end")


def test_variants_combine_with_the_grid_and_name_their_runs(presets):
    study = load_study(str(study_file(
        presets,
        variants={"old": ["method.tau_s=0.04", "method.tau_t=0.1"], "new": ["method.tau_s=0.1", "method.tau_t=0.02"]},
        grid={"method.name": ["rrd", "rrd+kd"]},
        seeds=[0, 1],
    )))  # fmt: skip
    assert len(study.points) == 2 * 2 * 2
    new = [p for p in study.points if p.variant == "new"]
    assert {(p.config.method.tau_s, p.config.method.tau_t) for p in new} == {(0.1, 0.02)}
    assert new[0].label().startswith("student new method=")


@pytest.mark.parametrize("name", ["demo", "paper_cifar100", "rrd_temperatures", "rrd_variants"])
def test_the_shipped_studies_expand(name):
    study = load_study(str(Path(__file__).parent.parent / "presets" / "studies" / f"{name}.yaml"))
    expected = {"demo": 6, "paper_cifar100": 13 * 5 * 3, "rrd_temperatures": 4 * 4 * 3, "rrd_variants": 2 * 2 * 3}
    assert len(study.points) == expected[name]


def test_a_seed_loop_trains_its_untrained_teacher_once(tmp_path, presets):
    runs = tmp_path / "runs"
    students = []
    for seed in (0, 1, 2):
        launched = cli("run", presets / "student.yaml", "--set", f"seed={seed}", "--detach", "--runs", runs)
        assert launched.returncode == 0, launched.stderr
        students.append(launched.stdout.strip().splitlines()[-1])
    assert "is being trained by run" in launched.stderr  # the later seeds say they wait for it
    store = Store(runs)
    rows = wait_for(lambda: (rows := store.list_runs()) and all(r["status"] not in ("queued", "running") for r in rows) and rows,
                    what="every run to end")  # fmt: skip
    teachers = [r for r in rows if r["method"] == "none"]
    assert len(teachers) == 1, [(r["id"], r["method"]) for r in rows]
    assert all(r["status"] == "completed" for r in rows), [(r["id"], r["status"], r["error"]) for r in rows]
    assert {store.get_run(s)["teacher_run"] for s in students} == {teachers[0]["id"]}
    waited = [s for s in students[1:] if any("waiting for teacher run" in e["message"] for e in store.events(s))]
    assert waited, "the later seeds waited for the teacher"


def test_removing_a_teacher_keeps_its_students_resumable(tmp_path, presets):
    runs = tmp_path / "runs"
    launched = cli("run", presets / "student.yaml", "--runs", runs)
    assert launched.returncode == 0, launched.stderr
    store = Store(runs)
    student = next(r for r in store.list_runs() if r["method"] == "kd")
    teacher = student["teacher_run"]
    assert (Path(student["run_dir"]) / "teacher.pt").is_file()

    removed = cli("rm", teacher, "-y", "--runs", runs)
    assert removed.returncode == 0, removed.stderr
    assert f"is the teacher of {student['id']}" in removed.stderr and "stay resumable" in removed.stderr
    # A student resumes from its own link to the weights; here it is retrained from its last epoch.
    store.update_run(student["id"], status="stopped")
    resumed = cli("resume", student["id"], "--runs", runs)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert store.get_run(student["id"])["status"] == "completed"


def test_a_teacher_whose_student_has_not_started_is_kept_without_force(tmp_path, presets):
    runs = tmp_path / "runs"
    store = Store(runs)
    teacher = store.create_run(load_study(str(study_file(presets))).points[0].config.to_dict(), status="completed")
    student = store.create_run(load_study(str(study_file(presets))).points[0].config.to_dict(), status="stopped",
                               teacher_run=teacher)  # fmt: skip
    refused = cli("rm", teacher, "-y", "--runs", runs)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"is the teacher of {student}, which have not kept its weights yet" in refused.stderr
    assert store.get_run(teacher) is not None
    assert cli("rm", teacher, "-y", "--force", "--runs", runs).returncode == 0
    assert store.get_run(teacher) is None


def test_placement_packs_runs_on_the_least_busy_device():
    from rrdtui.store import StoreError
    from rrdtui.studies.runner import placement

    place = placement(None, "0,1", 2)
    assert place.slots == 4 and place.devices == ["0", "1"]
    assert place.pick({}) == "0" and place.pick({"0": 1}) == "1" and place.pick({"0": 1, "1": 1}) == "0"
    assert place.pick({"0": 2, "1": 1}) == "1" and place.pick({"0": 2, "1": 2}) == ""  # full
    assert place.env("1") == {"CUDA_VISIBLE_DEVICES": "1"}
    assert placement(None, None, 1).slots == 1 and placement(None, None, 1).pick({}) is None
    for slots, devices, per_device, message in [
        (5, "0,1", 2, r"more than 2 device\(s\) x --per-device 2 hold"),
        (None, "0,x", 1, "'x' is not a CUDA device index"),
        (None, "0,0", 1, "lists a device twice"),
        (0, None, 1, "--slots must be at least 1"),
        (None, "0", 0, "--per-device must be at least 1"),
    ]:
        with pytest.raises(StoreError, match=message):
            placement(slots, devices, per_device)
