"""One run, one trainer, in the store: the run's lock, claims as compare-and-set, the liveness rule,
unique metric rows. (The same properties with real trainer processes are in test_lifecycle.py.)"""

from __future__ import annotations

import os
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


def new_run(store: Store, **fields) -> str:
    cfg = Config()
    cfg.method.name = "none"
    return store.create_run(cfg.to_dict(), config_hash=cfg.fingerprint(), **fields)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


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


def test_a_queued_row_always_names_a_live_owner(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)  # created by this (live) process
    row = store.get_run(run_id)
    assert row["status"] == "queued" and row["pid"] == os.getpid()
    store.update_run(run_id, status="stopped")
    store.claim([run_id])  # a resume: queued again, owned by the claimant, never by the dead pid
    row = store.get_run(run_id)
    assert row["status"] == "queued" and row["pid"] == os.getpid()


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


# -- stops ------------------------------------------------------------------------------------


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
