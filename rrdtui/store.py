"""The run store: one SQLite file (WAL) shared by trainers, the CLI and the dashboard.

Tables (schema versioned by migrations applied on open):
- runs: one row per run, its status, resolved configuration, progress and liveness (pid, host,
  heartbeat);
- metrics: long and narrow (run_id, step, epoch, name, value, time), so any loss term or statistic a
  method reports becomes a plottable series without a schema change;
- latest: the last value per run and metric, kept by a trigger, so run lists render instantly;
- events: launch, resume, warnings and errors per run;
- artifacts: small JSON objects per run (for example the final logit-correlation matrix).

No daemon watches runs: whoever reads the store notices a running run whose process is gone or whose
heartbeat is stale, and marks it crashed. This module imports neither torch nor any UI library.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils
from sqlite_utils import Migrations

DB_NAME = "rrdtui.db"
HEARTBEAT_SECONDS = 10.0
# A run is crashed when its process is gone (same host) or its heartbeat is this old (any host).
STALE_SECONDS = 45.0


class StoreError(Exception):
    """A user-facing store problem (unknown or ambiguous run id, ...): one line."""


def default_runs_dir() -> Path:
    return Path(os.environ.get("RRDTUI_RUNS") or "runs")


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------

migrations = Migrations("rrdtui")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "id": str,
            "name": str,
            "preset": str,
            "grp": str,
            "kind": str,  # train (plain CE), distill, transfer
            "method": str,
            "teacher_arch": str,
            "student_arch": str,
            "data": str,
            "status": str,
            "config": str,  # resolved configuration, JSON
            "config_hash": str,
            "teacher_ref": str,  # what the preset named: a checkpoint path, run id or preset
            "teacher_run": str,  # the teacher's run id when it is one of ours
            "pid": int,
            "host": str,
            "created": float,
            "started": float,
            "ended": float,
            "heartbeat": float,
            "epoch": int,
            "epochs": int,
            "step": int,
            "total_steps": int,
            "error": str,
            "env": str,  # versions, device, git commit: JSON
            "run_dir": str,
            "stop_requested": int,
        },
        pk="id",
    )
    db["runs"].create_index(["status"])
    db["runs"].create_index(["config_hash"])
    db["metrics"].create(
        {"run_id": str, "step": int, "epoch": float, "name": str, "value": float, "time": float}
    )
    db["metrics"].create_index(["run_id", "name", "step"])
    db["latest"].create(
        {"run_id": str, "name": str, "step": int, "epoch": float, "value": float, "time": float},
        pk=("run_id", "name"),
    )
    # The trigger keeps `latest` in step with every insert, whichever process writes.
    db.execute(
        """
        CREATE TRIGGER metrics_latest AFTER INSERT ON metrics BEGIN
          INSERT INTO latest (run_id, name, step, epoch, value, time)
          VALUES (NEW.run_id, NEW.name, NEW.step, NEW.epoch, NEW.value, NEW.time)
          ON CONFLICT (run_id, name) DO UPDATE SET
            step = excluded.step, epoch = excluded.epoch, value = excluded.value, time = excluded.time
          WHERE excluded.step >= latest.step;
        END
        """
    )
    db["events"].create(
        {"id": int, "run_id": str, "time": float, "level": str, "message": str}, pk="id"
    )
    db["events"].create_index(["run_id"])
    db["artifacts"].create(
        {"run_id": str, "name": str, "value": str, "time": float}, pk=("run_id", "name")
    )


@migrations()
def m002_teacher_acc(db: sqlite_utils.Database) -> None:
    # The teacher's measured accuracy (preflight) and the best validation accuracy, for run lists.
    db["runs"].add_column("teacher_acc", float)
    db["runs"].add_column("best_acc", float)


@migrations()
def m003_fingerprint_non_defaults(db: sqlite_utils.Database) -> None:
    # Fingerprints now hash only non-default values (robust to keys added later): recompute them.
    from rrdtui.config import fingerprint

    for row in list(db.query("SELECT id, config FROM runs")):
        try:
            config = json.loads(row["config"] or "{}")
        except ValueError:
            continue
        if config:
            db.execute("UPDATE runs SET config_hash = ? WHERE id = ?", [fingerprint(config), row["id"]])


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


def _now() -> float:
    return time.time()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class Store:
    """One connection to the run store. Cheap to open; not shared between threads."""

    def __init__(self, runs_dir: str | os.PathLike[str] | None = None):
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.runs_dir / DB_NAME
        conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA busy_timeout = 60000")
        self._ensure_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    def _ensure_wal(self) -> None:
        # WAL lets readers never block the writer; it is a property of the file, set once.
        for _ in range(50):
            try:
                if self.db.journal_mode != "wal":
                    self.db.enable_wal()
                return
            except sqlite3.OperationalError:
                time.sleep(0.1)

    def _migrate(self) -> None:
        # Several processes may open an old store at once: take the write lock before looking at
        # what is pending, so each migration runs exactly once.
        if not migrations.pending(self.db):
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            migrations.apply(self.db)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.rollback()
            raise

    def close(self) -> None:
        self.db.close()

    # -- runs ---------------------------------------------------------------------------------

    def new_run_id(self) -> str:
        while True:
            run_id = secrets.token_hex(4)
            if not self.db["runs"].count_where("id = ?", [run_id]):
                return run_id

    def create_run(self, config: dict[str, Any], **fields: Any) -> str:
        """Insert a run row (status queued unless given) and make its folder; return its id."""
        run_id = fields.pop("id", None) or self.new_run_id()
        run_dir = self.runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        method = config["method"]["name"]
        row = {
            "id": run_id,
            "name": config.get("name", ""),
            "grp": config.get("group", ""),
            "kind": "train" if method == "none" else "distill",
            "method": method,
            "teacher_arch": (config.get("teacher") or {}).get("arch"),
            "student_arch": config["student"]["arch"],
            "data": config["data"]["name"],
            "status": "queued",
            "config": json.dumps(config),
            "created": _now(),
            "epoch": 0,
            "epochs": config["train"]["epochs"],
            "step": 0,
            "run_dir": str(run_dir),
            "stop_requested": 0,
        }
        row.update(fields)
        self.db["runs"].insert(row)
        (run_dir / "config.json").write_text(json.dumps(config, indent=2))
        return run_id

    def update_run(self, run_id: str, **fields: Any) -> None:
        if fields:
            self.db["runs"].update(run_id, fields)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
        if not rows:
            return None
        return self._check_liveness(rows[0])

    def resolve_run(self, ref: str) -> dict[str, Any]:
        """A run by id or unique id prefix (or exact unique name); StoreError otherwise."""
        rows = list(self.db.query("SELECT * FROM runs WHERE id LIKE ? ORDER BY created", [ref + "%"]))
        if not rows:
            rows = list(self.db.query("SELECT * FROM runs WHERE name = ? ORDER BY created", [ref]))
        if not rows:
            raise StoreError(f"no run '{ref}' in {self.path} (see `rrdtui ls`)")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows[:5])
            raise StoreError(f"'{ref}' matches {len(rows)} runs ({ids}): give more of the id")
        return self._check_liveness(rows[0])

    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM runs ORDER BY created DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [self._check_liveness(r) for r in self.db.query(sql)]

    def find_completed(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The newest completed run trained with this configuration (a reusable teacher).

        Runs are found by fingerprint, then checked key by key against their stored configuration,
        so a changed default can never make a different teacher pass for this one.
        """
        from rrdtui.config import fingerprint, training_differences

        rows = self.db.query(
            "SELECT * FROM runs WHERE config_hash = ? AND status = 'completed' ORDER BY ended DESC",
            [fingerprint(config)],
        )
        for row in rows:
            if not training_differences(json.loads(row["config"]), config):
                return row
        return None

    def delete_run(self, run_id: str) -> None:
        with self.db.atomic():
            for table in ("metrics", "latest", "events", "artifacts"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            self.db.execute("DELETE FROM runs WHERE id = ?", [run_id])

    def _check_liveness(self, row: dict[str, Any]) -> dict[str, Any]:
        """Mark a running run whose process is gone or whose heartbeat is stale as crashed.

        A queued run that carries a pid belongs to a trainer process that will start it; when that
        process is gone, the run is crashed too (and resumable).
        """
        if row["status"] == "queued":
            if not row.get("pid") or row.get("host") != socket.gethostname() or pid_alive(row["pid"]):
                return row
        elif row["status"] != "running":
            return row
        now = _now()
        beat = row.get("heartbeat") or row.get("started") or row.get("created") or now
        same_host = row.get("host") == socket.gethostname()
        dead = (same_host and row.get("pid") and not pid_alive(row["pid"])) or now - beat > STALE_SECONDS
        if not dead:
            return row
        message = "the trainer process is gone (no heartbeat since %s)" % time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(beat)
        )
        # Conditional on the status still being running: a trainer that just finished wins.
        cursor = self.db.execute(
            "UPDATE runs SET status = 'crashed', error = ?, ended = ? WHERE id = ? AND status = ?",
            [message, now, row["id"], row["status"]],
        )
        if cursor.rowcount:
            self.event(row["id"], "error", f"marked crashed: {message}")
        fresh = list(self.db.query("SELECT * FROM runs WHERE id = ?", [row["id"]]))
        return fresh[0] if fresh else row

    # -- metrics ------------------------------------------------------------------------------

    def insert_metrics(self, rows: Iterable[tuple[str, int, float, str, float, float]]) -> None:
        """Insert (run_id, step, epoch, name, value, time) rows in one transaction."""
        rows = list(rows)
        if not rows:
            return
        with self.db.atomic():
            self.db.conn.executemany(
                "INSERT INTO metrics (run_id, step, epoch, name, value, time) VALUES (?, ?, ?, ?, ?, ?)", rows
            )

    def metric_names(self, run_id: str) -> list[str]:
        return [r["name"] for r in self.db.query("SELECT name FROM latest WHERE run_id = ? ORDER BY name", [run_id])]

    def series(self, run_id: str, name: str, after_step: int = -1) -> list[tuple[int, float, float]]:
        """(step, epoch, value) of one metric, oldest first, only steps after `after_step`."""
        cursor = self.db.execute(
            "SELECT step, epoch, value FROM metrics WHERE run_id = ? AND name = ? AND step > ? ORDER BY step",
            [run_id, name, after_step],
        )
        return [tuple(r) for r in cursor.fetchall()]

    def latest(self, run_id: str) -> dict[str, float]:
        cursor = self.db.execute("SELECT name, value FROM latest WHERE run_id = ?", [run_id])
        return {name: value for name, value in cursor.fetchall()}

    def all_metrics(self, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "SELECT run_id, step, epoch, name, value, time FROM metrics WHERE run_id = ? ORDER BY step, name",
                [run_id],
            )
        )

    def truncate_metrics(self, run_id: str, after_step: int) -> None:
        """Drop metric rows past a checkpoint's step (a resumed run rewrites them) and rebuild latest."""
        with self.db.atomic():
            self.db.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [run_id, after_step])
            self.db.execute("DELETE FROM latest WHERE run_id = ?", [run_id])
            self.db.execute(
                """
                INSERT INTO latest (run_id, name, step, epoch, value, time)
                SELECT run_id, name, step, epoch, value, time FROM metrics m
                WHERE run_id = ? AND step = (SELECT MAX(step) FROM metrics WHERE run_id = m.run_id AND name = m.name)
                GROUP BY name
                """,
                [run_id],
            )

    # -- events and artifacts -----------------------------------------------------------------

    def event(self, run_id: str, level: str, message: str) -> None:
        self.db["events"].insert({"run_id": run_id, "time": _now(), "level": level, "message": message})

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT time, level, message FROM events WHERE run_id = ? ORDER BY id", [run_id]))

    def put_artifact(self, run_id: str, name: str, value: Any) -> None:
        self.db["artifacts"].upsert(
            {"run_id": run_id, "name": name, "value": json.dumps(value), "time": _now()}, pk=("run_id", "name")
        )

    def get_artifact(self, run_id: str, name: str) -> Any:
        rows = list(self.db.query("SELECT value FROM artifacts WHERE run_id = ? AND name = ?", [run_id, name]))
        return json.loads(rows[0]["value"]) if rows else None


# ---------------------------------------------------------------------------------------------
# The reporter a trainer writes through
# ---------------------------------------------------------------------------------------------


class RunReporter:
    """What a trainer knows of the store: metrics (batched), events, progress, stop requests.

    Metric rows are buffered and written together every `flush_seconds`, so a trainer makes a few
    short write transactions per minute instead of one per value. A background thread writes the
    heartbeat, so a long evaluation never makes a healthy run look crashed.
    """

    def __init__(self, store: Store, run_id: str, flush_seconds: float = 2.0):
        self.store = store
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self._buffer: list[tuple[str, int, float, str, float, float]] = []
        self._last_flush = _now()
        self._lock = threading.Lock()
        self._beat_stop = threading.Event()
        self._beat_thread: threading.Thread | None = None

    def start(self, **fields: Any) -> None:
        now = _now()
        self.store.update_run(
            self.run_id,
            status="running",
            pid=os.getpid(),
            host=socket.gethostname(),
            started=now,
            heartbeat=now,
            ended=None,
            error=None,
            stop_requested=0,
            **fields,
        )
        self._beat_thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
        self._beat_thread.start()

    def _beat(self) -> None:
        # Its own connection: sqlite3 connections are not to be shared across threads.
        store = Store(self.store.runs_dir)
        try:
            while not self._beat_stop.wait(HEARTBEAT_SECONDS):
                store.update_run(self.run_id, heartbeat=_now())
        finally:
            store.close()

    def log(self, step: int, epoch: float, values: dict[str, float]) -> None:
        now = _now()
        with self._lock:
            self._buffer.extend((self.run_id, step, epoch, k, float(v), now) for k, v in values.items())
        if now - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._buffer = self._buffer, []
        self.store.insert_metrics(rows)
        self._last_flush = _now()

    def progress(self, **fields: Any) -> None:
        """Epoch, step and the like on the run row (with a heartbeat)."""
        self.store.update_run(self.run_id, heartbeat=_now(), **fields)

    def event(self, level: str, message: str) -> None:
        self.store.event(self.run_id, level, message)

    def artifact(self, name: str, value: Any) -> None:
        self.store.put_artifact(self.run_id, name, value)

    def truncate(self, after_step: int) -> None:
        """Forget metric rows past a checkpoint's step (a resumed run writes them again)."""
        with self._lock:
            self._buffer.clear()
        self.store.truncate_metrics(self.run_id, after_step)

    def stop_requested(self) -> bool:
        row = list(self.store.db.query("SELECT stop_requested FROM runs WHERE id = ?", [self.run_id]))
        return bool(row and row[0]["stop_requested"])

    def finish(self, status: str, error: str | None = None, **fields: Any) -> None:
        self.flush()
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(timeout=5)
        self.store.update_run(self.run_id, status=status, error=error, ended=_now(), heartbeat=_now(), **fields)
