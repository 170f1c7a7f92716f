"""One run, one trainer: the run's lock, claims as compare-and-set, liveness, unique metric rows, and
stops that are never lost. Real trainer processes wherever the property is about processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils

from rrdtui import store as store_module
from rrdtui.config import Config
from rrdtui.ownership import RunLock, lock_held
from rrdtui.store import HOST, RunReporter, Store, StoreError

from conftest import write_preset

EPOCHS = 4
STEPS_PER_EPOCH = 16
# A hang guard, not a speed bound: generous enough for a machine at load 8.
PATIENCE_S = 600


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rrdtui.cli", *map(str, args)], capture_output=True, text=True, timeout=PATIENCE_S, **kwargs
    )


def wait_for(predicate, what: str = "condition"):
    end = time.monotonic() + PATIENCE_S
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    return write_preset(
        tmp_path,
        "owned",
        data={"name": "synthetic", "num_classes": 4, "train_size": 256, "val_size": 64, "probe_size": 32},
        student={"arch": "resnet8"},
        method={"name": "none"},
        optim={"lr": 0.05, "milestones": [3]},
        train={"epochs": EPOCHS, "batch_size": 16, "device": "cpu", "log_every": 1},
    )


def new_run(store: Store, **fields) -> str:
    cfg = Config()
    cfg.method.name = "none"
    return store.create_run(cfg.to_dict(), config_hash=cfg.fingerprint(), **fields)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def history_once(store: Store, run_id: str) -> None:
    epochs = [e for _, e, _ in store.series(run_id, "val/acc")]
    assert epochs == [float(e) for e in range(1, EPOCHS + 1)], epochs
    rows = store.db.execute("SELECT name, step, COUNT(*) FROM metrics WHERE run_id = ? GROUP BY name, step HAVING COUNT(*) > 1", [run_id]).fetchall()
    assert rows == []
    steps = [s for s, _, _ in store.series(run_id, "train/loss")]
    assert steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))


def mid_run(store: Store, run_id: str) -> dict | None:
    row = store.get_run(run_id)
    return row if row["status"] == "running" and 0 < row["step"] < EPOCHS * STEPS_PER_EPOCH // 2 else None


def crashed_run(tmp_path: Path, preset: Path) -> tuple[Path, Store, str]:
    """A real run killed with SIGKILL mid-training: crashed, resumable."""
    runs = tmp_path / "runs"
    run_id = cli("run", preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    store = Store(runs)
    row = wait_for(lambda: mid_run(store, run_id), "the run to be mid-training")
    os.kill(row["pid"], signal.SIGKILL)
    wait_for(lambda: store.get_run(run_id)["status"] == "crashed", "crashed")
    return runs, store, run_id


# -- the lock and the liveness rule ---------------------------------------------------------------


def test_a_held_lock_means_alive_whatever_the_heartbeat(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)
    lock = RunLock(store.run_dir(run_id))
    assert lock.acquire()
    # A suspended trainer: its heartbeat is ten minutes old and its pid says nothing.
    store.update_run(run_id, status="running", pid=dead_pid(), host=HOST, heartbeat=time.time() - 600)
    assert lock_held(store.run_dir(run_id))
    assert store.get_run(run_id)["status"] == "running"
    with pytest.raises(StoreError, match=f"run {run_id} is already being trained"):
        store.claim([run_id])
    lock.release()
    assert store.get_run(run_id)["status"] == "crashed"


def test_a_second_owner_cannot_take_a_held_lock(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    assert first.acquire()
    assert not second.acquire(patience=0.1)
    assert first.holder() == os.getpid()
    first.release()
    assert second.acquire(patience=0.1)
    second.release()


def test_a_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from rrdtui.ownership import RunLock; import sys, time; l = RunLock({str(tmp_path)!r}); "
         "assert l.acquire(); print('locked', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    assert lock_held(tmp_path)
    holder.kill()
    holder.wait()
    assert not lock_held(tmp_path)


def test_a_queued_run_whose_launcher_died_reads_crashed_and_can_be_removed_or_resumed(tmp_path, preset):
    runs = tmp_path / "runs"
    # A launcher that writes the run row and dies before it starts any trainer (`... | true`).
    script = (
        "import sys; from rrdtui.config import load_preset; from rrdtui.launcher import create_runs, plan_runs; "
        f"from rrdtui.store import Store; s = Store({str(runs)!r}); "
        f"print(create_runs(plan_runs(load_preset({str(preset)!r}), 'p', s), s)[-1])"
    )
    run_id = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    store = Store(runs)
    row = store.get_run(run_id)
    assert row["status"] == "crashed" and "before it started" in row["error"]
    assert cli("rm", run_id, "-y", "--runs", runs).returncode == 0
    assert store.get_run(run_id) is None


def test_a_queued_row_always_names_a_live_owner(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)  # created by this (live) process
    row = store.get_run(run_id)
    assert row["status"] == "queued" and row["pid"] == os.getpid()
    store.update_run(run_id, status="stopped")
    store.claim([run_id])  # a resume: queued again, owned by the claimant, never by the dead pid
    row = store.get_run(run_id)
    assert row["status"] == "queued" and row["pid"] == os.getpid()


def test_a_run_launched_through_a_closed_pipe_is_never_stuck_queued(tmp_path, preset):
    runs = tmp_path / "runs"
    subprocess.run(
        f"{sys.executable} -m rrdtui.cli run {preset} --detach --runs {runs} | true", shell=True, timeout=PATIENCE_S
    )
    store = Store(runs)
    (row,) = store.list_runs()
    final = wait_for(lambda: (r := store.get_run(row["id"]))["status"] not in ("queued", "running") and r, "an end")
    assert final["status"] in ("completed", "crashed")


# -- claims -----------------------------------------------------------------------------------


def test_claims_are_all_or_nothing_and_name_the_owner(tmp_path):
    store = Store(tmp_path)
    teacher, student = new_run(store), new_run(store)
    store.update_run(teacher, status="crashed")
    store.update_run(student, status="stopped")
    store.claim([teacher, student])
    with pytest.raises(StoreError, match=f"run {teacher} is already being resumed by pid {os.getpid()}"):
        store.claim([teacher, student])
    other = new_run(store)
    store.update_run(other, status="completed")
    store.update_run(teacher, status="failed")
    with pytest.raises(StoreError, match="is completed"):
        store.claim([teacher, other])
    assert store.get_run(teacher)["status"] == "failed"  # nothing of a refused claim is written


def test_two_simultaneous_resumes_give_one_trainer_and_one_line(tmp_path, preset):
    runs, store, run_id = crashed_run(tmp_path, preset)
    cmd = [sys.executable, "-m", "rrdtui.cli", "resume", run_id, "--detach", "--runs", str(runs)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=PATIENCE_S), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    (loser,) = [err for code, _, err in results if code == 2]
    assert loser.count("\n") == 1 and "Traceback" not in loser
    assert f"run {run_id} is already being" in loser and "by pid" in loser
    final = wait_for(lambda: (r := store.get_run(run_id))["status"] not in ("queued", "running") and r, "the end")
    assert final["status"] == "completed"
    history_once(store, run_id)
    log = (runs / run_id / "train.log").read_text()
    assert log.count(f"epoch {EPOCHS}/{EPOCHS}") == 1


def test_a_suspended_trainer_with_a_stale_heartbeat_stays_running_and_cannot_be_resumed(tmp_path, preset):
    runs = tmp_path / "runs"
    run_id = cli("run", preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    store = Store(runs)
    row = wait_for(lambda: mid_run(store, run_id), "the run to be mid-training")
    os.kill(row["pid"], signal.SIGSTOP)  # Ctrl-Z, or a laptop asleep
    try:
        store.update_run(run_id, heartbeat=time.time() - 3600)
        assert store.get_run(run_id)["status"] == "running"
        refused = cli("resume", run_id, "--runs", runs)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr == f"rrdtui: error: run {run_id} is already being trained by pid {row['pid']}\n"
    finally:
        os.kill(row["pid"], signal.SIGCONT)
    final = wait_for(lambda: (r := store.get_run(run_id))["status"] not in ("queued", "running") and r, "the end")
    assert final["status"] == "completed"
    history_once(store, run_id)


# -- stops ------------------------------------------------------------------------------------


def test_a_stop_sent_while_the_run_starts_is_never_lost(tmp_path, preset):
    runs = tmp_path / "runs"
    store = Store(runs)
    for _ in range(3):
        run_id = cli("run", preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
        stopped = cli("stop", run_id, "--runs", runs)  # at once: queued, or just started
        assert stopped.returncode == 0, stopped.stderr
        final = wait_for(lambda: (r := store.get_run(run_id))["status"] not in ("queued", "running") and r, "the end")
        assert final["status"] == "stopped", (final["status"], [e["message"] for e in store.events(run_id)])
        assert store.get_run(run_id)["step"] < EPOCHS * STEPS_PER_EPOCH


def test_a_stopped_queued_run_is_left_alone_by_its_trainer(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)
    assert store.cancel_queued(run_id)
    reporter = RunReporter(store, run_id)
    assert reporter.start() is False  # the start does not reset the stop
    row = store.get_run(run_id)
    assert row["status"] == "stopped" and row["stop_requested"] == 1
    assert not lock_held(store.run_dir(run_id))


# -- unique metrics ---------------------------------------------------------------------------


def test_the_store_refuses_duplicate_metric_rows(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)
    store.insert_metrics([(run_id, 5, 1.0, "val/acc", 10.0, 0.0)])
    store.insert_metrics([(run_id, 5, 1.0, "val/acc", 20.0, 1.0)])  # a replayed step replaces
    assert store.series(run_id, "val/acc") == [(5, 1.0, 20.0)]
    assert store.latest(run_id) == {"val/acc": 20.0}
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("INSERT INTO metrics (run_id, step, epoch, name, value, time) VALUES (?, 5, 1, 'val/acc', 3, 0)", [run_id])


def test_the_migration_removes_duplicates_a_double_trainer_left(tmp_path):
    db = sqlite_utils.Database(tmp_path / "rrdtui.db")
    store_module.migrations.apply(db, stop_before="m004_unique_metrics")
    db["runs"].insert({"id": "dup00001", "name": "dup", "status": "completed", "config": "{}", "epochs": 2})
    for value in (1.0, 2.0):  # every step twice, the second trainer's value last
        for step in (1, 2):
            db["metrics"].insert({"run_id": "dup00001", "step": step, "epoch": step, "name": "val/acc", "value": value * step, "time": 0.0})
    db.close()
    store = Store(tmp_path)
    assert store.series("dup00001", "val/acc") == [(1, 1.0, 2.0), (2, 2.0, 4.0)]
    assert store.latest("dup00001") == {"val/acc": 4.0}
    store.insert_metrics([("dup00001", 3, 3.0, "val/acc", 9.0, 0.0)])  # the trigger survived
    assert store.latest("dup00001") == {"val/acc": 9.0}


def test_run_folders_resolve_against_the_store_wherever_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store("runs")  # a relative store folder, as `rrdtui` gives by default
    run_id = new_run(store)
    store.db.execute("UPDATE runs SET run_dir = ? WHERE id = ?", [f"runs/{run_id}", run_id])
    store.db.conn.commit()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    row = Store(tmp_path / "runs").get_run(run_id)
    assert row["run_dir"] == str(tmp_path / "runs" / run_id) and Path(row["run_dir"]).is_dir()
