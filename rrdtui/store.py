"""The run store: one SQLite file (WAL) shared by trainers, the CLI and the dashboard.

Tables (schema versioned by migrations applied on open):
- runs: one row per run, its status, resolved configuration, progress and liveness (pid, host,
  heartbeat);
- metrics: long and narrow (run_id, step, epoch, name, value, time), so any loss term or statistic a
  method reports becomes a plottable series without a schema change;
- latest: the last value per run and metric, kept by a trigger, so run lists render instantly;
- events: launch, resume, warnings and errors per run;
- artifacts: small JSON objects per run (for example the final logit-correlation matrix).

A run is owned by exactly one trainer, which holds an OS lock on `runs/<id>/lock` (rrdtui.ownership) for
as long as it owns the run. Starting or resuming a run is a compare-and-set on its row (`claim`).
No daemon watches runs: whoever reads the store applies the one liveness rule (`Store.alive`) and
marks a run whose owner is gone crashed. This module imports neither torch nor any UI library.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils
from sqlite_utils import Migrations

from rrdtui.ownership import ACTIVE, RESUMABLE, RunLock, lock_held

DB_NAME = "rrdtui.db"
HEARTBEAT_SECONDS = 10.0
# On another host, a run whose heartbeat is this old is crashed (on this host the lock decides).
STALE_SECONDS = 45.0
HOST = socket.gethostname()
# In a student's run folder: its own link to its teacher run's weights (removing the teacher run
# leaves the student resumable).
TEACHER_FILE = "teacher.pt"


class StoreError(Exception):
    """A user-facing store problem (unknown or ambiguous run id, ...): one line."""


def default_runs_dir() -> Path:
    return Path(os.environ.get("RRDTUI_RUNS") or "runs")


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------

migrations = Migrations("rrdtui")

# Keeps `latest` in step with every insert into metrics, whichever process writes.
LATEST_TRIGGER = """
CREATE TRIGGER metrics_latest AFTER INSERT ON metrics BEGIN
  INSERT INTO latest (run_id, name, step, epoch, value, time)
  VALUES (NEW.run_id, NEW.name, NEW.step, NEW.epoch, NEW.value, NEW.time)
  ON CONFLICT (run_id, name) DO UPDATE SET
    step = excluded.step, epoch = excluded.epoch, value = excluded.value, time = excluded.time
  WHERE excluded.step >= latest.step;
END
"""


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
    db.execute(LATEST_TRIGGER)
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


@migrations()
def m004_unique_metrics(db: sqlite_utils.Database) -> None:
    # One row per (run, name, step), enforced by the schema: a writer that replays a step replaces
    # its row. Stores written before this kept duplicates (two trainers on one run): the newest wins.
    db.execute("DROP TRIGGER IF EXISTS metrics_latest")
    db.execute(
        """
        CREATE TABLE metrics_unique (
          run_id TEXT, step INTEGER, epoch FLOAT, name TEXT, value FLOAT, time FLOAT,
          UNIQUE (run_id, name, step)
        )
        """
    )
    db.execute(
        """
        INSERT INTO metrics_unique (run_id, step, epoch, name, value, time)
        SELECT run_id, step, epoch, name, value, time FROM metrics
        WHERE rowid IN (SELECT MAX(rowid) FROM metrics GROUP BY run_id, name, step)
        ORDER BY rowid
        """
    )
    db.execute("DROP TABLE metrics")
    db.execute("ALTER TABLE metrics_unique RENAME TO metrics")
    # The UNIQUE constraint's index serves the (run_id, name, step) lookups the old index served.
    db.execute(LATEST_TRIGGER)


@migrations()
def m005_studies(db: sqlite_utils.Database) -> None:
    # A study owns runs: the expanded study file, and where its runner is. Runs point to their study.
    db["studies"].create(
        {
            "name": str,
            "file": str,  # the study file it was expanded from
            "spec": str,  # the expanded study (base presets, grid, seeds, overrides): JSON
            "created": float,
            "pid": int,  # the study runner while it runs
            "host": str,
            "slots": int,
            "devices": str,  # comma-separated CUDA device indices, "" for the CPU
            "per_device": int,
            "stop_requested": int,
            "started": float,
            "ended": float,
        },
        pk="name",
    )
    db["runs"].add_column("study", str)
    db["runs"].add_column("study_point", str)  # the grid point and seed this run stands for: JSON
    db["runs"].create_index(["study"])


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


def teacher_check_warning(events: list[dict[str, Any]]) -> str | None:
    """The trainer's TEACHER CHECK warning among a run's events (its teacher measured more than a
    point below teacher.expected_acc), or None: for `run`, `show` and the dashboard alike."""
    for event in events:
        if event["level"] == "warning" and event["message"].startswith("TEACHER CHECK"):
            return event["message"]
    return None


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


def store_writable(runs_dir: str | os.PathLike[str]) -> bool:
    """Whether a store in runs_dir can be written: its folder (where SQLite also keeps the -wal and
    -shm files), or the nearest folder above that exists, and the database file when there is one.
    False on a read-only file system for root too (access(2) answers EROFS to everyone). A path
    that is not a folder counts as writable: opening it for writing says what is wrong with it."""
    folder = Path(runs_dir)
    db = folder / DB_NAME
    if folder.exists() and not folder.is_dir():
        return True
    if db.exists():
        return os.access(folder, os.W_OK | os.X_OK) and os.access(db, os.W_OK)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def read_only_message(path: Path) -> str:
    return f"{path} is read-only: rrdtui can list and show its runs but not change them; choose a writable folder with --runs"


def _store_problem(path: Path, exc: sqlite3.Error) -> str:
    """One line for a database SQLite refused to open or read."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "readonly" in message or "read-only" in message:
        return read_only_message(path)
    if "locked" in message or "busy" in message:
        return f"{path} is locked by another process ({message}): try again in a moment"
    if "unable to open" in message:
        return f"{path} cannot be opened ({message}): check that it is a file you may read, or choose another folder with --runs"
    return f"{path} is not an rrdtui store ({message}): move it away or choose another folder with --runs"


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection that works on a read-only file system too.

    A WAL database is read through its -shm file; where there is none and none can be made (a
    read-only folder), no writer has it open, so the file is read as it is (`immutable=1`).
    """
    if not path.is_file():
        raise StoreError(f"no store at {path}, and its folder is read-only: choose another folder with --runs")
    uri = "file:" + urllib.parse.quote(str(path.resolve()))
    failure: sqlite3.Error | None = None
    for options in ("mode=ro", "mode=ro&immutable=1"):
        conn = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=60.0, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:  # no -shm file and none can be made
            conn.close()
            failure = exc
    assert failure is not None
    raise failure


class Store:
    """One connection to the run store. Cheap to open; not shared between threads.

    `readonly`: open the file read-only (a read-only folder or file system); writes then fail.
    Without it, a store that cannot be written is refused. Either way a file that is not a store,
    or not a database at all, raises StoreError with one line.
    """

    def __init__(self, runs_dir: str | os.PathLike[str] | None = None, readonly: bool = False):
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.path = self.runs_dir / DB_NAME
        self.readonly = readonly
        conn = None
        try:
            if readonly:
                conn = _connect_read_only(self.path)
            else:
                if self.runs_dir.exists() and not self.runs_dir.is_dir():
                    raise StoreError(f"{self.runs_dir} is a file, not a folder of runs: choose another folder with --runs")
                if not store_writable(self.runs_dir):
                    raise StoreError(read_only_message(self.path))
                try:
                    self.runs_dir.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"cannot make the runs folder {self.runs_dir} ({exc.strerror or exc}): "
                        "choose another folder with --runs"
                    ) from None
                if self.path.is_dir():
                    raise StoreError(f"{self.path} is a folder, not a store: move it away or choose another folder with --runs")
                conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA busy_timeout = 60000")
            if not readonly:
                self._ensure_wal()
                self.db.execute("PRAGMA synchronous = NORMAL")
            tables = set(self.db.table_names())
            if readonly and not tables:
                raise StoreError(f"{self.path} holds no runs yet and is read-only: choose another folder with --runs")
            if tables and "runs" not in tables:
                raise StoreError(
                    f"{self.path} is not an rrdtui store (a database of something else): "
                    "move it away or choose another folder with --runs"
                )
            self._migrate()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreError(_store_problem(self.path, exc)) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    def _ensure_wal(self) -> None:
        # WAL lets readers never block the writer; it is a property of the file, set once. Only a
        # lock is worth waiting for: a file that is no database or cannot be written fails at once.
        for attempt in range(50):
            try:
                if self.db.journal_mode != "wal":
                    self.db.enable_wal()
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == 49:
                    raise
                time.sleep(0.1)

    def _migrate(self) -> None:
        # Several processes may open an old store at once: take the write lock before looking at
        # what is pending, so each migration runs exactly once.
        if not migrations.pending(self.db):
            return
        if self.readonly:
            raise StoreError(
                f"{self.path} needs an upgrade to this version of rrdtui but is read-only: "
                "open it once where it can be written"
            )
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

    def run_dir(self, run_id: str) -> Path:
        """A run's folder: always `<store folder>/<id>`, wherever the command runs from."""
        return self.runs_dir.resolve() / run_id

    def create_run(self, config: dict[str, Any], **fields: Any) -> str:
        """Insert a run row (queued, owned by this process until its trainer takes over); return its id.

        The row carries its creator's pid from the first moment, so a launcher that dies before it
        starts a trainer leaves a run that reads crashed (and can be resumed or removed), never one
        queued forever.
        """
        run_id = fields.pop("id", None) or self.new_run_id()
        run_dir = self.run_dir(run_id)
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
            "pid": os.getpid(),
            "host": HOST,
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
        # Read every row before judging any: a write (marking a run crashed) while a SELECT is still
        # open would upgrade a stale read snapshot, which SQLite refuses at once ("database is locked").
        return [self._check_liveness(r) for r in list(self.db.query(sql))]

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
                return self._present(row)
        return None

    def find_active(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The oldest queued or running run with this configuration that is alive (a teacher being
        trained for another student: later students wait for it instead of training it again)."""
        from rrdtui.config import fingerprint, training_differences

        rows = list(self.db.query(  # all read first: judging liveness may write (see list_runs)
            "SELECT * FROM runs WHERE config_hash = ? AND status IN ('queued', 'running') ORDER BY created",
            [fingerprint(config)],
        ))
        for row in rows:
            row = self._check_liveness(row)
            if row["status"] in ACTIVE and not training_differences(json.loads(row["config"]), config):
                return row
        return None

    def students_of(self, run_id: str) -> list[dict[str, Any]]:
        """The runs distilled (or to be distilled) from the teacher run `run_id`."""
        return [self._present(r) for r in self.db.query("SELECT * FROM runs WHERE teacher_run = ? ORDER BY created", [run_id])]

    def delete_run(self, run_id: str) -> None:
        with self.db.atomic():
            for table in ("metrics", "latest", "events", "artifacts"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            self.db.execute("DELETE FROM runs WHERE id = ?", [run_id])

    # -- studies ------------------------------------------------------------------------------

    def save_study(self, name: str, file: str, spec: dict[str, Any]) -> None:
        """Record a study (or its newer expansion: a re-run may change its file or overrides)."""
        existing = self.get_study(name)
        fields = {"file": file, "spec": json.dumps(spec)}
        if existing is None:
            self.db["studies"].insert({"name": name, "created": _now(), "stop_requested": 0, **fields})
        else:
            self.db["studies"].update(name, fields)

    def get_study(self, name: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM studies WHERE name = ?", [name]))
        return rows[0] if rows else None

    def list_studies(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM studies ORDER BY created DESC"))

    def study_runs(self, name: str) -> list[dict[str, Any]]:
        """A study's runs, oldest first, each judged by the liveness rule."""
        rows = list(self.db.query("SELECT * FROM runs WHERE study = ? ORDER BY created, rowid", [name]))
        return [self._check_liveness(r) for r in rows]  # all read first: judging may write (see list_runs)

    def update_study(self, name: str, **fields: Any) -> None:
        if fields:
            self.db["studies"].update(name, fields)

    def study_runner_alive(self, study: dict[str, Any]) -> bool:
        """Whether the study's runner process is still there (the liveness rule, applied to runners:
        on this host its lock decides)."""
        if (study.get("host") or HOST) != HOST:
            return bool(study.get("pid")) and study.get("ended") is None
        return lock_held(self.study_dir(study["name"]))

    def study_dir(self, name: str) -> Path:
        """A study's folder (its runner's lock and log): `<store folder>/studies/<name>`."""
        return self.runs_dir.resolve() / "studies" / name

    # -- ownership and liveness ---------------------------------------------------------------

    def alive(self, row: dict[str, Any]) -> bool:
        """The one liveness rule: does this queued or running run have an owner that is still there?

        On this host the run's lock decides: held means alive, whatever the heartbeat says (a
        suspended trainer, a busy database). A queued run not yet locked belongs to the process that
        queued it (a launcher, or a trainer that is starting) while that process lives. Runs trained
        on another host are judged by their heartbeat.
        """
        if (row.get("host") or HOST) == HOST:
            if lock_held(self.run_dir(row["id"])):
                return True
            return row["status"] == "queued" and pid_alive(row.get("pid"))
        beat = row.get("heartbeat") or row.get("started") or row.get("created") or _now()
        return _now() - beat <= STALE_SECONDS

    def _present(self, row: dict[str, Any]) -> dict[str, Any]:
        """A run row as readers see it: its folder resolved against this store's folder (rows written
        from another working directory hold a relative one)."""
        row["run_dir"] = str(self.run_dir(row["id"]))
        return row

    def _check_liveness(self, row: dict[str, Any]) -> dict[str, Any]:
        """Mark a queued or running run whose owner is gone crashed (and so resumable)."""
        if row["status"] not in ACTIVE or self.alive(row):
            return self._present(row)
        beat = row.get("heartbeat") or row.get("started") or row.get("created") or _now()
        if row["status"] == "queued":
            message = "its launcher or trainer process is gone before it started"
        else:
            message = "the trainer process is gone (no heartbeat since %s)" % time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(beat)
            )
        if self.readonly:  # a store we cannot write still shows the truth, just does not record it
            return self._present({**row, "status": "crashed", "error": message})
        # Compare-and-set on what was judged: an owner that just took over, finished or handed the
        # run to a new process changed the row, and wins.
        cursor = self.db.execute(
            "UPDATE runs SET status = 'crashed', error = ?, ended = ? WHERE id = ? AND status = ? AND pid IS ?",
            [message, _now(), row["id"], row["status"], row.get("pid")],
        )
        self.db.conn.commit()
        if cursor.rowcount:
            self.event(row["id"], "error", f"marked crashed: {message}")
        fresh = list(self.db.query("SELECT * FROM runs WHERE id = ?", [row["id"]]))
        return self._present(fresh[0] if fresh else row)

    def claim(self, run_ids: list[str], action: str = "resume") -> None:
        """Take runs for a new trainer: one compare-and-set, all or none (StoreError on a conflict).

        Each run must be resumable (stopped, crashed or failed, after the liveness rule has judged
        it); it becomes queued, owned by this process until the trainer it starts takes over.
        """
        for run_id in run_ids:  # settle liveness first: a dead owner's run becomes crashed
            self.get_run(run_id)
        conn = self.db.conn
        conn.commit()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for run_id in run_ids:
                row = conn.execute("SELECT status, pid, host FROM runs WHERE id = ?", [run_id]).fetchone()
                if row is None:
                    raise StoreError(f"no run '{run_id}' in {self.path}")
                status, pid, host = row
                if status in ACTIVE:
                    where = f"pid {pid}" + (f" on {host}" if host and host != HOST else "")
                    doing = "resumed" if status == "queued" else "trained"
                    raise StoreError(f"run {run_id} is already being {doing} by {where}")
                if status not in RESUMABLE:
                    raise StoreError(f"run {run_id} is {status}: only stopped, crashed or failed runs {action}")
            now = _now()
            for run_id in run_ids:
                conn.execute(
                    "UPDATE runs SET status = 'queued', pid = ?, host = ?, stop_requested = 0, error = NULL, "
                    "ended = NULL WHERE id = ?",
                    [os.getpid(), HOST, run_id],
                )
                conn.execute(
                    "INSERT INTO events (run_id, time, level, message) VALUES (?, ?, 'info', ?)",
                    [run_id, now, f"{action} requested"],
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise

    def hand_over(self, run_ids: list[str], pid: int) -> None:
        """The queued runs now belong to the trainer process `pid` (started by this launcher)."""
        for run_id in run_ids:
            self.db.execute(
                "UPDATE runs SET pid = ?, host = ? WHERE id = ? AND status = 'queued'", [pid, HOST, run_id]
            )
        self.db.conn.commit()

    def cancel_queued(self, run_id: str, status: str = "stopped", error: str = "stopped before it started") -> bool:
        """queued -> stopped (or failed, with the reason), unless its trainer started it meanwhile
        (then False)."""
        cursor = self.db.execute(
            "UPDATE runs SET status = ?, stop_requested = ?, error = ?, ended = ? WHERE id = ? AND status = 'queued'",
            [status, int(status == "stopped"), error, _now(), run_id],
        )
        self.db.conn.commit()
        return cursor.rowcount == 1

    def start_owned(self, run_id: str, **fields: Any) -> bool:
        """queued -> running for the trainer that holds the run's lock; False if it was cancelled.

        A compare-and-set: a stop that arrived while the run waited (it is now stopped) or anything
        else that moved the row on makes this fail, and the trainer leaves the run alone. `started`
        keeps the first start; a resume does not overwrite it.
        """
        now = _now()
        assignments = ", ".join(f"{k} = ?" for k in fields)
        cursor = self.db.execute(
            "UPDATE runs SET status = 'running', pid = ?, host = ?, started = COALESCE(started, ?), heartbeat = ?, "
            "ended = NULL, error = NULL" + (", " + assignments if assignments else "")
            + " WHERE id = ? AND status = 'queued' AND stop_requested = 0",
            [os.getpid(), HOST, now, now, *fields.values(), run_id],
        )
        self.db.conn.commit()
        return cursor.rowcount == 1

    # -- metrics ------------------------------------------------------------------------------

    def insert_metrics(self, rows: Iterable[tuple[str, int, float, str, float, float]]) -> None:
        """Insert (run_id, step, epoch, name, value, time) rows in one transaction."""
        rows = list(rows)
        if not rows:
            return
        with self.db.atomic():
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO metrics (run_id, step, epoch, name, value, time) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
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
        self._run_lock: RunLock | None = None

    def start(self, **fields: Any) -> bool:
        """Mark the run running (compare-and-set from queued) and start the heartbeat.

        False, and no heartbeat, when the run is no longer queued: a stop that came while it waited
        is never lost by a start that resets it.
        """
        self._run_lock = RunLock(self.store.run_dir(self.run_id))
        if not self._run_lock.acquire():
            holder = self._run_lock.holder()
            raise StoreError(f"run {self.run_id} is already being trained by pid {holder or '?'}")
        if not self.store.start_owned(self.run_id, **fields):
            self._run_lock.release()
            return False
        self._beat_thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
        self._beat_thread.start()
        return True

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
        try:
            self.store.update_run(self.run_id, status=status, error=error, ended=_now(), heartbeat=_now(), **fields)
        finally:
            # Only once the row says how the run ended: a reader never sees it running and unlocked.
            if self._run_lock is not None:
                self._run_lock.release()
