"""What the dashboard shows, computed from the store without any UI: run rows, formatting, the
paper's numbers, relative improvement, configuration diffs, incremental series and log tails.

Everything here runs in thread workers (each with its own Store) or in tests; nothing imports
textual or torch.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rrdtui.registry import RegistryError, methods, paper_key, uses_relation_temperatures
from rrdtui.runfilter import NOTE, TAGS, matches, parse_filters
from rrdtui.studies.table import relative_improvement  # noqa: F401 (one formula, for the dashboard too)
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from rrdtui.store import Store

# Which way is better, for "best" values: every loss (whatever its method) is lower-is-better.
HIGHER_IS_BETTER = {"val/acc", "train/acc", "teacher/val_acc", "sim/agreement", "sim/cka", "sim/relation_corr"}
LOWER_IS_BETTER = {"sim/kl", "sim/logit_corr_diff"}
LOSS_PREFIXES = ("train/loss", "first/loss", "val/loss")


def lower_is_better(name: str) -> bool:
    return name.startswith(LOSS_PREFIXES) or name in LOWER_IS_BETTER


def loss_series(names: Iterable[str], method: str | None = None) -> tuple[list[str], list[str]]:
    """The loss curves a run has, in drawing order: (train/loss, its terms, val/loss) and the first
    stage's first/loss_<term>. Terms: ce, kd, then the method's own in its SPEC's order, then any
    other alphabetically."""
    try:
        info = methods().get(method or "")
    except RegistryError:  # a broken method module: the curves still show, in name order
        info = None
    order = ["ce", "kd", *(info.losses if info else ())]

    def key(term: str) -> tuple[int, str]:
        return (order.index(term), "") if term in order else (len(order), term)

    names = set(names)
    terms = sorted((n.removeprefix("train/loss_") for n in names if n.startswith("train/loss_")), key=key)
    main = [n for n in ("train/loss", *(f"train/loss_{t}" for t in terms), "val/loss") if n in names]
    first = sorted((n for n in names if n.startswith("first/loss")), key=lambda n: key(n.removeprefix("first/loss_")))
    return main, first


def loss_label(name: str) -> str:
    """A loss curve's legend: total, val, or its term upper-cased (train/loss_rrd -> RRD)."""
    if name in ("train/loss", "first/loss"):
        return "total"
    if name == "val/loss":
        return "val"
    return name.split("/loss_", 1)[-1].upper()


STATUS_STYLES = {
    "queued": "dim",
    "running": "bold green",
    "completed": "",
    "stopped": "yellow",
    "crashed": "bold white on dark_red",
    "failed": "bold red",
    "diverged": "bold white on dark_magenta",
}


@contextmanager
def open_store(runs_dir: Path) -> Iterator[Store]:
    """A Store for the current thread only, closed afterwards (a connection is cheap).

    The store module (sqlite-utils, which pulls in numpy when it is installed) is imported here, in
    the first worker, so the dashboard draws its first frame without waiting for it.
    """
    from rrdtui.store import Store, store_writable

    store = Store(runs_dir, readonly=not store_writable(runs_dir))  # a read-only store is still shown
    try:
        yield store
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# Paper numbers
# ---------------------------------------------------------------------------------------------


def paper_label(method: str | None) -> str:
    return paper_key(method or "") or (method or "").upper()


def paper_number(paper: dict[str, Any] | None, method: str | None) -> float | None:
    if not paper:
        return None
    value = paper.get(paper_label(method))
    return float(value) if isinstance(value, (int, float)) else None


def paper_ri(paper: dict[str, Any] | None, method: str | None) -> float | None:
    """The paper's relative improvement over KD for this run's method and pair."""
    if not paper or method in ("kd", "none"):
        return None
    return relative_improvement(paper_number(paper, method), _num(paper.get("KD")), _num(paper.get("student")))


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def fmt_num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1e5 or (value != 0 and abs(value) < 10 ** -(digits + 1)):
        return f"{value:.{digits}e}"
    return f"{value:.{digits}f}"


def fmt_delta(value: float | None, digits: int = 2) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isinf(seconds) or math.isnan(seconds):
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}"
    return f"{hours // 24}d{hours % 24:02d}h"


def fmt_time(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return time.strftime("%m-%d %H:%M", time.localtime(stamp))


def fmt_value(value: Any) -> str:
    """A configuration value, compact."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# ---------------------------------------------------------------------------------------------
# Run rows (the home screen): runs columns + the `latest` table, never a scan of metrics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    id: str
    name: str
    preset: str
    method: str
    teacher: str
    student: str
    data: str
    status: str
    tau_s: float | None
    tau_t: float | None
    epoch: int
    epochs: int
    step: int
    total_steps: int
    created: float
    started: float | None
    ended: float | None
    best: float | None
    last: float | None
    paper: float | None
    teacher_acc: float | None
    error: str
    tags: tuple[str, ...] = ()  # the run's artifacts "tags" and "note" (rrdtui tag, rrdtui note, `t`)
    note: str = ""
    config: str = field(default="", compare=False, repr=False)  # its configuration, JSON, for filters

    @property
    def group(self) -> str:
        return self.preset or "(no preset)"

    def fraction(self) -> float:
        if self.total_steps:
            return min(1.0, self.step / self.total_steps)
        if self.epochs:
            return min(1.0, self.epoch / self.epochs)
        return 0.0

    def time_left(self, now: float) -> float | None:
        if self.status != "running" or not self.started:
            return None
        frac = self.fraction()
        if frac <= 0:
            return None
        return (now - self.started) * (1 - frac) / frac

    def progress_text(self, now: float) -> str:
        text = f"{self.epoch}/{self.epochs}"
        left = fmt_duration(self.time_left(now))
        return f"{text} {left}" if left else text

    def search_text(self) -> str:
        return " ".join(
            (
                self.id,
                self.name,
                self.preset,
                self.method,
                self.teacher,
                self.student,
                self.data,
                self.status,
                pair_text(self),
                *self.tags,
                self.note,
            )
        ).lower()


def _preset_name(preset: str | None) -> str:
    if not preset:
        return ""
    return Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset


class RunLister:
    """Reads the run list. Keeps the parsed bits of each run's configuration (it never changes), so a
    refresh costs one query on runs and one on `latest`. Used from one worker at a time."""

    def __init__(self) -> None:
        self._config_bits: dict[str, tuple[float | None, float | None, dict | None]] = {}
        self._best: dict[str, tuple[int, float | None]] = {}  # fallback when runs.best_acc is null

    def _bits(self, row: dict[str, Any]) -> tuple[float | None, float | None, dict | None]:
        bits = self._config_bits.get(row["id"])
        if bits is None:
            try:
                config = json.loads(row.get("config") or "{}")
            except ValueError:
                config = {}
            method = config.get("method") or {}
            paper = config.get("paper") if isinstance(config.get("paper"), dict) else None
            bits = (_num(method.get("tau_s")), _num(method.get("tau_t")), paper)
            self._config_bits[row["id"]] = bits
        return bits

    def _fallback_best(self, execute: Callable, run_id: str, last_step: int | None) -> float | None:
        """Best val/acc for a run whose row does not carry it: incremental, from the last seen step."""
        if last_step is None:
            return None
        seen_step, best = self._best.get(run_id, (-1, None))
        if last_step > seen_step:
            cursor = execute(
                "SELECT MAX(value) FROM metrics WHERE run_id = ? AND name = 'val/acc' AND step > ?",
                [run_id, seen_step],
            )
            value = cursor.fetchone()[0]
            if value is not None:
                best = value if best is None else max(best, value)
            self._best[run_id] = (last_step, best)
        return best

    def load(self, store: Store) -> list[RunRow]:
        """The run list through the Store (which marks dead running runs as crashed)."""
        return self._rows(store.list_runs(), store.db.execute)

    def load_quick(self, runs_dir: Path, limit: int = -1) -> list[RunRow] | None:
        """The first read, with plain sqlite3: no store module to import (sqlite-utils pulls in numpy
        and click, half a second on a small machine), so the list shows sooner; the newest `limit`
        runs only, if given. None when the store must read instead: no database yet, an unexpected
        schema, or a running run that may be dead (the Store decides and marks it crashed)."""
        path = Path(runs_dir) / "rrdtui.db"
        if not path.is_file():
            return None
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error:
            return None
        try:
            conn.row_factory = sqlite3.Row
            # The configuration's bits the list shows, parsed by SQLite (the first read parses every
            # run's configuration: json.loads would take longer than the rest of the read).
            runs = [dict(r) for r in conn.execute(
                "SELECT *, json_extract(config, '$.method.tau_s') AS bit_tau_s, "
                "json_extract(config, '$.method.tau_t') AS bit_tau_t, json_extract(config, '$.paper') AS bit_paper "
                # Only the rows kept go through the sort with their configurations and bits.
                "FROM runs WHERE rowid IN (SELECT rowid FROM runs ORDER BY created DESC LIMIT ?) ORDER BY created DESC",
                [limit],
            )]  # fmt: skip
            if any(r.get("status") == "running" and _maybe_dead(r) for r in runs):
                return None
            for r in runs:
                paper = json.loads(r["bit_paper"]) if str(r["bit_paper"]).startswith("{") else None
                self._config_bits.setdefault(r["id"], (_num(r["bit_tau_s"]), _num(r["bit_tau_t"]), paper))
            conn.row_factory = None
            return self._rows(runs, conn.execute)
        except (sqlite3.Error, KeyError):
            return None
        finally:
            conn.close()

    def _rows(self, runs: list[dict[str, Any]], execute: Callable) -> list[RunRow]:
        notes: dict[tuple[str, str], Any] = {}
        for run_id, name, value in execute(
            "SELECT run_id, name, value FROM artifacts WHERE name IN (?, ?)", [TAGS, NOTE]
        ).fetchall():
            try:
                notes[run_id, name] = json.loads(value)
            except (TypeError, ValueError):
                pass  # unreadable: shown as none
        last = {
            run_id: (value, step)
            for run_id, value, step in execute(
                "SELECT run_id, value, step FROM latest WHERE name = 'val/acc'"
            ).fetchall()
        }
        rows = []
        for r in runs:
            tau_s, tau_t, paper = self._bits(r)
            last_value, last_step = last.get(r["id"], (None, None))
            best = r.get("best_acc")
            if best is None:
                best = self._fallback_best(execute, r["id"], last_step)
            rows.append(
                RunRow(
                    id=r["id"],
                    name=r.get("name") or "",
                    preset=_preset_name(r.get("preset")) or (r.get("grp") or ""),
                    method=r.get("method") or "",
                    teacher=r.get("teacher_arch") or "",
                    student=r.get("student_arch") or "",
                    data=r.get("data") or "",
                    status=r.get("status") or "",
                    tau_s=tau_s,
                    tau_t=tau_t,
                    epoch=int(r.get("epoch") or 0),
                    epochs=int(r.get("epochs") or 0),
                    step=int(r.get("step") or 0),
                    total_steps=int(r.get("total_steps") or 0),
                    created=r.get("created") or 0.0,
                    started=r.get("started"),
                    ended=r.get("ended"),
                    best=best,
                    last=last_value,
                    paper=paper_number(paper, r.get("method")),
                    teacher_acc=r.get("teacher_acc"),
                    error=(r.get("error") or "").splitlines()[0] if r.get("error") else "",
                    tags=tuple(str(t) for t in notes.get((r["id"], TAGS)) or ()),
                    note=str(notes.get((r["id"], NOTE)) or ""),
                    config=r.get("config") or "",
                )
            )
        return rows


def _maybe_dead(row: dict[str, Any], stale: float = 30.0) -> bool:
    """Conservative: True when the Store's liveness check (45 s heartbeat, or a gone process on this
    host) could mark this running run crashed, so the Store reads it."""
    now = time.time()
    beat = row.get("heartbeat") or row.get("started") or row.get("created") or now
    if now - beat > stale:
        return True
    pid = row.get("pid")
    if pid and row.get("host") == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return False
    return False


def uses_tau(method: str) -> bool:
    return uses_relation_temperatures(method)


def tau_text(row: RunRow) -> str:
    if not uses_tau(row.method) or row.tau_s is None or row.tau_t is None:
        return "-"
    return f"{row.tau_s:g}/{row.tau_t:g}"


def short_arch(arch: str) -> str:
    """resnet32x4 -> r32x4 (the papers' shorthand); other names unchanged."""
    return "r" + arch[6:] if arch.startswith("resnet") and arch[6:7].isdigit() else arch


def pair_text(row: RunRow, short: bool = True) -> str:
    f = short_arch if short else (lambda a: a)
    if row.teacher:
        return f"{f(row.teacher)}→{f(row.student)}"
    return f(row.student)


SORT_KEYS = ("created", "name", "status", "method", "best", "last", "progress")


def sort_rows(rows: list[RunRow], key: str, reverse: bool) -> list[RunRow]:
    def k(row: RunRow) -> Any:
        if key == "created":
            return row.created
        if key == "name":
            return row.name.lower()
        if key == "status":
            return row.status
        if key == "method":
            return row.method
        if key == "best":
            return -1e9 if row.best is None else row.best
        if key == "last":
            return -1e9 if row.last is None else row.last
        if key == "progress":
            return row.fraction()
        return row.created

    return sorted(rows, key=k, reverse=reverse)


def filter_rows(rows: list[RunRow], text: str) -> list[RunRow]:
    """The runs every word of a filter matches. A `key=value` word is a filter of `rrdtui ls
    --filter` (rrdtui.runfilter: `tau_s=0.07`, `method=rrd`, `tag=best`, `status=running`); any other
    word, in any case, a piece of the run's id, name, preset, method, architectures, data, status,
    tags or note."""
    pairs, words = [], []
    for word in text.split():
        key, eq, _ = word.partition("=")
        if eq and key:
            pairs.append(word)
        else:
            words.append(word.lower())
    if not pairs:
        return [r for r in rows if all(w in r.search_text() for w in words)] if words else rows
    filters = parse_filters(pairs)  # never raises: every pair has a key

    def passes(row: RunRow) -> bool:
        try:
            return matches({"id": row.id, "name": row.name, "status": row.status, "config": row.config}, filters, list(row.tags))
        except ValueError:  # a configuration that is not JSON: no value to match
            return False

    return [r for r in rows if all(w in r.search_text() for w in words) and passes(r)]


# ---------------------------------------------------------------------------------------------
# Series, read incrementally
# ---------------------------------------------------------------------------------------------


# "Nothing read yet": below every step, the first stage's negative ones included (-N .. -1).
BEFORE_ALL = -(2**62)


@dataclass
class Series:
    steps: list[int]
    epochs: list[float]
    values: list[float]

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else BEFORE_ALL

    def extend(self, rows: list[tuple[int, float, float]]) -> None:
        for step, epoch, value in rows:
            self.steps.append(step)
            self.epochs.append(epoch if epoch is not None else float("nan"))
            self.values.append(value if value is not None else float("nan"))


def new_series() -> Series:
    return Series([], [], [])


def read_increments(
    store: Store, run_id: str, names: list[str] | None, last_steps: dict[str, int]
) -> tuple[dict[str, list[tuple[int, float, float]]], set[str]]:
    """New points of a run's series since `last_steps`, and the names to drop and re-read whole.

    A resumed run rewrites its metrics past the checkpoint; when the newest step the store knows for a
    series is below what was read, that series is re-read from the start (and listed in resets).
    `names` None means every metric the run has; a name missing from `last_steps` is read whole.
    """
    newest = dict(store.db.execute("SELECT name, step FROM latest WHERE run_id = ?", [run_id]).fetchall())
    wanted = sorted(newest) if names is None else [n for n in names if n in newest]
    out: dict[str, list[tuple[int, float, float]]] = {}
    resets: set[str] = set()
    for name in wanted:
        last = last_steps.get(name, BEFORE_ALL)
        if newest[name] is not None and newest[name] < last:
            resets.add(name)
            last = BEFORE_ALL
        elif newest[name] is not None and newest[name] == last:
            continue
        rows = store.series(run_id, name, after_step=last)
        if rows or name in resets:
            out[name] = rows
    for name in last_steps:
        if name not in newest and last_steps[name] >= 0:
            resets.add(name)  # the store dropped it (truncated): forget what we had
            out.setdefault(name, [])
    return out, resets


# ---------------------------------------------------------------------------------------------
# Log tail
# ---------------------------------------------------------------------------------------------


class LogTail:
    """Reads the end of a growing log file, incrementally; notices truncation."""

    def __init__(self, path: Path, first_bytes: int = 32_768):
        self.path = path
        self.first_bytes = first_bytes
        self.offset: int | None = None
        self._partial = ""

    def read(self) -> tuple[bool, list[str]]:
        """(reset, new complete lines)."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return False, []
        reset = False
        if self.offset is None or size < self.offset:
            reset = self.offset is not None
            start = max(0, size - self.first_bytes)
            self._partial = ""
            skip_first = start > 0
        else:
            start = self.offset
            skip_first = False
        if size == start:
            self.offset = size
            return reset, []
        with open(self.path, "rb") as fh:
            fh.seek(start)
            data = fh.read(min(size - start, 4 * self.first_bytes))
        self.offset = start + len(data)
        text = self._partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        if skip_first and lines:
            lines = lines[1:]
        return reset, [line.rstrip("\r") for line in lines]


# ---------------------------------------------------------------------------------------------
# Configuration diff
# ---------------------------------------------------------------------------------------------


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                out.update(flatten(value, path))
            else:
                out[path] = value
    else:
        out[prefix] = config
    return out


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Keys whose values differ between configurations, with each one's value ('' when absent)."""
    flats = [flatten(c or {}) for c in configs]
    keys: list[str] = []
    seen: set[str] = set()
    for flat in flats:
        for key in flat:
            if key not in seen:
                seen.add(key)
                keys.append(key)
    rows = []
    missing = object()
    for key in keys:
        values = [flat.get(key, missing) for flat in flats]
        if all(v == values[0] for v in values[1:]):
            continue
        rows.append((key, ["" if v is missing else fmt_value(v) for v in values]))
    return rows


# ---------------------------------------------------------------------------------------------
# Compare: final and best values
# ---------------------------------------------------------------------------------------------


def final_and_best(store: Store, run_id: str, names: list[str]) -> dict[str, tuple[float | None, float | None]]:
    """Per metric: (final value, best value or None when no direction applies)."""
    latest = store.latest(run_id)
    out: dict[str, tuple[float | None, float | None]] = {}
    for name in names:
        final = latest.get(name)
        best = None
        if final is not None and (name in HIGHER_IS_BETTER or lower_is_better(name)):
            agg = "MAX" if name in HIGHER_IS_BETTER else "MIN"
            best = store.db.execute(
                f"SELECT {agg}(value) FROM metrics WHERE run_id = ? AND name = ?", [run_id, name]
            ).fetchone()[0]
        out[name] = (final, best)
    return out
