"""The run store: round trips, the latest trigger, migrations, liveness, and several processes at once."""

from __future__ import annotations

import json
import multiprocessing
import socket
import sqlite3
import time

import pytest
import sqlite_utils

from rrdtui import store as store_module
from rrdtui.config import Config
from rrdtui.store import RunReporter, Store, StoreError


def new_run(store: Store, **fields) -> str:
    cfg = Config()
    cfg.method.name = "none"
    return store.create_run(cfg.to_dict(), config_hash=cfg.fingerprint(), **fields)


def test_run_round_trip_and_prefix_lookup(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)
    row = store.get_run(run_id)
    assert len(run_id) == 8 and row["status"] == "queued" and row["method"] == "none"
    assert json.loads(row["config"])["method"]["name"] == "none"
    assert (tmp_path / run_id / "config.json").exists()
    assert store.resolve_run(run_id[:4])["id"] == run_id
    with pytest.raises(StoreError, match="no run 'zzzz'"):
        store.resolve_run("zzzz")
    assert store.db.journal_mode == "wal"


def test_ambiguous_prefix_is_an_error(tmp_path):
    store = Store(tmp_path)
    new_run(store, id="abcd0001")
    new_run(store, id="abcd0002")
    with pytest.raises(StoreError, match="matches 2 runs"):
        store.resolve_run("abcd")


def test_metrics_latest_and_truncate(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)
    now = time.time()
    store.insert_metrics([(run_id, s, s / 10, "train/loss", 1.0 / s, now) for s in range(1, 11)])
    store.insert_metrics([(run_id, 10, 1.0, "val/acc", 50.0, now)])
    assert store.latest(run_id) == {"train/loss": 0.1, "val/acc": 50.0}
    assert [s for s, _, _ in store.series(run_id, "train/loss", after_step=7)] == [8, 9, 10]
    store.truncate_metrics(run_id, after_step=5)
    assert store.latest(run_id) == {"train/loss": pytest.approx(0.2)}
    assert len(store.all_metrics(run_id)) == 5


def test_reporter_batches_and_records_the_end(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)
    reporter = RunReporter(store, run_id, flush_seconds=3600)
    reporter.start()
    assert store.get_run(run_id)["status"] == "running"
    reporter.log(1, 0.1, {"train/loss": 2.0, "train/acc": 10.0})
    assert store.latest(run_id) == {}  # buffered, not yet written
    reporter.finish("completed")
    row = store.get_run(run_id)
    assert row["status"] == "completed" and row["ended"] is not None
    assert store.latest(run_id) == {"train/loss": 2.0, "train/acc": 10.0}


def test_dead_process_reads_crashed(tmp_path):
    store = Store(tmp_path)
    run_id = new_run(store)
    dead = multiprocessing.get_context("fork").Process(target=lambda: None)
    dead.start()
    dead.join()
    store.update_run(run_id, status="running", pid=dead.pid, host=socket.gethostname(), heartbeat=time.time())
    row = store.get_run(run_id)
    assert row["status"] == "crashed" and "process is gone" in row["error"]
    assert any("marked crashed" in e["message"] for e in store.events(run_id))


def test_stale_heartbeat_on_another_host_reads_crashed(tmp_path):
    store = Store(tmp_path)
    alive = new_run(store)
    stale = new_run(store)
    now = time.time()
    store.update_run(alive, status="running", pid=1, host="elsewhere", heartbeat=now)
    store.update_run(stale, status="running", pid=1, host="elsewhere", heartbeat=now - 120)
    statuses = {r["id"]: r["status"] for r in store.list_runs()}
    assert statuses == {alive: "running", stale: "crashed"}


def test_older_store_is_migrated_once_keeping_its_rows(tmp_path):
    # A store written by the first schema version only (before teacher_acc/best_acc existed).
    db = sqlite_utils.Database(tmp_path / "rrdtui.db")
    store_module.migrations.apply(db, stop_before="m002_teacher_acc")
    db["runs"].insert({"id": "old00001", "name": "old", "status": "completed", "config": "{}", "epochs": 3})
    db["metrics"].insert({"run_id": "old00001", "step": 1, "epoch": 1.0, "name": "val/acc", "value": 42.0, "time": 0.0})
    db.close()

    store = Store(tmp_path)
    assert "teacher_acc" in store.db["runs"].columns_dict
    assert store.get_run("old00001")["name"] == "old"
    assert store.latest("old00001") == {"val/acc": 42.0}
    applied = [m.name for m in store_module.migrations.applied(store.db)]
    assert applied == ["m001_initial", "m002_teacher_acc", "m003_fingerprint_non_defaults", "m004_unique_metrics",
                       "m005_studies"]


def _open_concurrently(path: str, barrier) -> None:
    barrier.wait()
    Store(path).close()


def test_several_processes_opening_an_old_store_migrate_it_once(tmp_path):
    db = sqlite_utils.Database(tmp_path / "rrdtui.db")
    store_module.migrations.apply(db, stop_before="m002_teacher_acc")
    db.close()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open_concurrently, args=(str(tmp_path), barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    rows = sqlite3.connect(tmp_path / "rrdtui.db").execute("SELECT name FROM _sqlite_migrations").fetchall()
    assert sorted(r[0] for r in rows) == ["m001_initial", "m002_teacher_acc", "m003_fingerprint_non_defaults", "m004_unique_metrics",
                       "m005_studies"]


def _writer(path: str, run_id: str, rows: int) -> None:
    store = Store(path)
    reporter = RunReporter(store, run_id, flush_seconds=0.05)
    for step in range(rows):
        reporter.log(step, step / 10, {"train/loss": float(step), "train/acc": 1.0})
        if step % 50 == 0:
            reporter.progress(step=step)
    reporter.flush()


def _reader(path: str, ids: list[str], seconds: float, errors) -> None:
    store = Store(path)
    end = time.time() + seconds
    try:
        while time.time() < end:
            store.list_runs()
            for run_id in ids:
                store.latest(run_id)
                store.series(run_id, "train/loss")
    except Exception as exc:  # any error, "database is locked" above all, fails the test
        errors.put(repr(exc))


def test_four_writers_and_three_readers_lose_nothing(tmp_path):
    store = Store(tmp_path)
    ids = [new_run(store) for _ in range(4)]
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    rows = 1500
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), i, rows)) for i in ids]
    readers = [ctx.Process(target=_reader, args=(str(tmp_path), ids, 4.0, errors)) for _ in range(3)]
    for p in writers + readers:
        p.start()
    for p in writers + readers:
        p.join(120)
    assert [p.exitcode for p in writers + readers] == [0] * 7
    assert errors.empty(), errors.get()
    for run_id in ids:
        assert len(store.series(run_id, "train/loss")) == rows
        assert store.latest(run_id)["train/loss"] == rows - 1


def test_a_teacher_trained_before_new_keys_existed_is_still_found(tmp_path):
    store = Store(tmp_path)
    cfg = Config()
    cfg.method.name = "none"
    cfg.train.epochs = 3
    old = cfg.to_dict()
    del old["student"]["init"], old["student"]["freeze"]  # keys an older rrdtui did not have
    run_id = store.create_run(old, config_hash="stale-hash-from-an-old-version", status="completed")
    Store(tmp_path)  # nothing pending: the stale hash stays until the migration below recomputes it
    store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm003_fingerprint_non_defaults'")
    store = Store(tmp_path)
    assert store.find_completed(cfg.to_dict())["id"] == run_id


def test_a_stored_run_that_differs_in_training_is_not_reused(tmp_path):
    store = Store(tmp_path)
    cfg = Config()
    cfg.method.name = "none"
    stored = cfg.to_dict()
    stored["optim"]["lr"] = 0.1  # as if the default had been 0.1 when it was trained
    from rrdtui.config import fingerprint

    store.create_run(stored, config_hash=fingerprint(cfg.to_dict()), status="completed")  # same hash
    assert store.find_completed(cfg.to_dict()) is None


def test_judging_runs_while_another_process_writes_does_not_fail(tmp_path, monkeypatch):
    """Reading run lists marks dead owners' runs crashed; another process writing meanwhile must not
    make that write fail with "database is locked" (a stale read snapshot cannot be upgraded)."""
    import subprocess
    import sys

    from rrdtui.store import Store

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid is no process
    store, other = Store(tmp_path / "runs"), Store(tmp_path / "runs")
    config = {"method": {"name": "none"}, "student": {"arch": "resnet8"}, "data": {"name": "synthetic"},
              "train": {"epochs": 1}}  # fmt: skip
    ids = [store.create_run(config, status="running", pid=gone.pid, study="s") for _ in range(3)]
    judge = Store.alive

    def alive_while_another_process_writes(self, row):
        other.event(row["id"], "info", "a write by another process")
        return judge(self, row)

    monkeypatch.setattr(Store, "alive", alive_while_another_process_writes)
    assert {r["status"] for r in store.list_runs()} == {"crashed"}
    for run_id in ids:
        store.update_run(run_id, status="running")
    assert {r["status"] for r in store.study_runs("s")} == {"crashed"}
