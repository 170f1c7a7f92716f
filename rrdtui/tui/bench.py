"""How fast the dashboard opens on a big store: `uv run python -m rrdtui.tui.bench`.

Builds a store of 1,000 runs and 5 million metric rows in a temporary folder (executemany in large
transactions), then measures, headless at 120x40: cold starts to the first runs drawn, beside a
bare Textual app drawing a table of as many rows (the baseline), app start to the run table
populated, one refresh of the run list (idle, and with new metrics and progress from 50 running
runs), opening a run's detail (all of its series) and one incremental detail refresh. Prints the
Markdown section that BENCHMARKS.md holds (or writes it to --out); `--start-only` only the starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rrdtui.config import Config
from rrdtui.store import Store

TRAIN = ("train/loss", "train/loss_ce", "train/loss_rrd", "train/acc", "train/lr", "train/throughput")
EVAL = ("val/acc", "val/loss", "sim/agreement", "sim/kl", "sim/cka", "sim/relation_corr",
        "sim/logit_corr_diff", "rrd/entropy_t", "rrd/entropy_s")  # fmt: skip


def _status(i: int) -> str:
    """Per 100 runs: 5 running, 3 crashed, 1 diverged, 1 queued, 90 completed (interleaved)."""
    k = i % 100
    if k % 20 == 1:
        return "running"
    if k in (2, 35, 68):
        return "crashed"
    return {3: "diverged", 4: "queued"}.get(k, "completed")


EPOCHS = 240


def _config(i: int) -> dict:
    cfg = Config().to_dict()
    cfg["name"] = f"bench_{i:04d}"
    cfg["data"]["name"] = "cifar100"
    cfg["method"]["name"] = ("rrd", "rrd+kd", "kd", "crd")[i % 4]
    cfg["method"]["tau_s"] = (0.02, 0.04, 0.07, 0.1)[i % 4]
    cfg["teacher"].update({"arch": "resnet32x4", "run": "teacher0"})
    cfg["student"]["arch"] = "resnet8x4"
    cfg["paper"] = {"teacher": 79.42, "student": 72.5, "KD": 73.33, "CRD": 75.51, "RRD": 74.48, "RRD+KD": 75.08}
    return cfg


def build_store(runs_dir: Path, n_runs: int = 1000, total_rows: int = 5_000_000) -> int:
    """A store of n_runs runs and about total_rows metric rows; returns the row count.

    Completed runs have all 240 epochs, running, crashed and diverged ones half, queued ones none.
    """
    store = Store(runs_dir)
    now = time.time()
    done = sum({"completed": 1.0, "queued": 0.0}.get(_status(i), 0.5) for i in range(n_runs))
    rows_per_run = int(total_rows / max(done, 1.0))
    train_points = max(1, (rows_per_run - EPOCHS * len(EVAL)) // len(TRAIN))
    steps_per_epoch = 200
    every = max(1, EPOCHS * steps_per_epoch // train_points)
    total = 0
    runs = []
    for i in range(n_runs):
        status = _status(i)
        cfg = _config(i)
        created = now - (n_runs - i) * 600
        row = {
            "id": f"{i:08x}", "name": cfg["name"], "preset": f"presets/bench_{i % 20}.yaml", "grp": "", "kind": "distill",
            "method": cfg["method"]["name"], "teacher_arch": "resnet32x4", "student_arch": "resnet8x4",
            "data": "cifar100", "status": status, "config": json.dumps(cfg), "created": created,
            "started": created + 5, "epoch": EPOCHS if status == "completed" else EPOCHS // 2, "epochs": EPOCHS,
            "step": 0, "total_steps": EPOCHS * steps_per_epoch, "run_dir": str(runs_dir / f"{i:08x}"),
            "stop_requested": 0, "teacher_acc": 79.42,
            "best_acc": None if status == "running" else 70 + 5 * math.sin(i),
            "pid": os.getpid() if status == "running" else None, "host": socket.gethostname(),
            "heartbeat": now if status == "running" else created + 3600,
        }  # fmt: skip
        runs.append(row)
    with store.db.atomic():
        store.db["runs"].insert_all(runs, batch_size=500)
    batch: list[tuple] = []
    for i, run in enumerate(runs):
        rid, t0 = run["id"], run["created"]
        epochs_done = run["epoch"]
        for k in range(train_points):
            step = (k + 1) * every
            ep = step / steps_per_epoch
            if ep > epochs_done:
                break
            v = math.exp(-ep / 50)
            batch.extend((rid, step, ep, name, v * (j + 1), t0 + step) for j, name in enumerate(TRAIN))
        for e in range(1, epochs_done + 1):
            step = e * steps_per_epoch
            v = 1 - math.exp(-e / 40)
            batch.extend((rid, step, float(e), name, v * (j + 1), t0 + step) for j, name in enumerate(EVAL))
        if len(batch) >= 500_000 or i == len(runs) - 1:
            with store.db.atomic():
                store.db.conn.executemany(
                    "INSERT INTO metrics (run_id, step, epoch, name, value, time) VALUES (?, ?, ?, ?, ?, ?)", batch
                )
            total += len(batch)
            batch = []
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return total


async def _measure(runs_dir: Path, repeats: int) -> dict[str, float | list[float]]:
    from textual.widgets import DataTable

    from rrdtui.tui.app import RRDApp
    from rrdtui.tui.screens.detail import DetailScreen
    from rrdtui.tui.screens.runs import RunsScreen

    async def until(pilot, condition, timeout=60.0):
        deadline = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > deadline:
                raise TimeoutError("the dashboard did not get there in time")
            await pilot.pause(0.001)

    out: dict[str, list[float]] = {"start": [], "refresh_idle": [], "refresh_live": [], "detail_open": [],
                                   "detail_refresh": []}  # fmt: skip
    store = Store(runs_dir)
    running = [r["id"] for r in store.db.query("SELECT id FROM runs WHERE status = 'running'")]
    store.close()
    for rep in range(repeats):
        t0 = time.perf_counter()
        app = RRDApp(runs_dir, Path("presets"), poll_interval=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.complete)
            await pilot.pause()
            out["start"].append(time.perf_counter() - t0)
            screen = app.screen
            assert screen.query_one(DataTable).row_count == len(screen.rows) > 0

            for _ in range(3):
                n = screen.load_count
                t0 = time.perf_counter()
                screen.poll()
                await until(pilot, lambda: screen.load_count > n)
                await pilot.pause()
                out["refresh_idle"].append(time.perf_counter() - t0)

            # 50 running runs report a new epoch: metrics, progress, heartbeat
            store = Store(runs_dir)
            now = time.time()
            rows = [(rid, 10_000_000 + rep, 121.0 + rep, name, 0.5, now) for rid in running for name in EVAL]
            store.insert_metrics(rows)
            with store.db.atomic():
                for rid in running:
                    store.db.execute("UPDATE runs SET epoch = epoch + 1, heartbeat = ? WHERE id = ?", [now, rid])
            store.close()
            n = screen.load_count
            t0 = time.perf_counter()
            screen.poll()
            await until(pilot, lambda: screen.load_count > n)
            await pilot.pause()
            out["refresh_live"].append(time.perf_counter() - t0)

            table = screen.query_one(DataTable)
            table.move_cursor(row=table.get_row_index(running[0]))
            t0 = time.perf_counter()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.loaded)
            await pilot.pause()
            out["detail_open"].append(time.perf_counter() - t0)
            detail = app.screen
            store = Store(runs_dir)
            store.insert_metrics([(running[0], 20_000_000 + rep, 122.0, name, 0.6, time.time()) for name in EVAL])
            store.close()
            n = detail.load_count
            t0 = time.perf_counter()
            detail.poll()
            await until(pilot, lambda: detail.load_count > n)
            await pilot.pause()
            out["detail_refresh"].append(time.perf_counter() - t0)
    return out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import textual

    return (f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, Textual {textual.__version__}")  # fmt: skip


# Each moment is taken when the app gets there (a hook sets an event), not by polling: a loop of
# short pauses would take the CPU from the app's own thread workers and slow what it measures.
COLD = """
import asyncio, sys, time
from pathlib import Path
from rrdtui.tui.app import RRDApp
from rrdtui.tui.screens.runs import RunsScreen

times = {}
done = asyncio.Event()

def hook(name, moment, condition=lambda self: True):
    original = getattr(RunsScreen, name)

    def hooked(self, *args):
        result = original(self, *args)
        if moment not in times and condition(self):
            times[moment] = time.time()
            if moment == "complete":
                done.set()
        return result

    setattr(RunsScreen, name, hooked)

hook("_update_title", "painted")  # the screen's first content, from its on_mount
hook("_first_drawn", "first")
hook("_render_table", "complete", lambda self: self.complete)
hook("_add_rest", "complete", lambda self: self.complete)

async def main():
    app = RRDApp(Path(sys.argv[1]), Path("presets"), poll_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await done.wait()
        await pilot.pause()
        print(times["painted"], times["first"], time.time())

asyncio.run(main())
"""


# The baseline: a bare Textual app with one table, drawing a screenful of rows like the run list's
# (FIRST_CHUNK rows of 12 short texts), read from nowhere. What the dashboard takes beyond it to show
# its first runs is its own cost: imports, reading the store, building the cells.
BARE = """
import asyncio, sys, time
from textual.app import App
from textual.widgets import DataTable

ROWS = int(sys.argv[1])

class Bare(App):
    def __init__(self):
        super().__init__()
        self.drawn = asyncio.Event()

    def compose(self):
        yield DataTable()

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns(" ", "id", "name", "status", "progress", "best", "last", "paper", "method",
                          "tau", "pair", "started")
        for i in range(ROWS):
            table.add_row(" ", f"{i:08x}", f"bench_{i:04d}", "completed", "240/240", "74.42", "74.42",
                          "74.48", "rrd", "0.04/0.1", "r32x4-r8x4", "06-13 15:07")
        self.call_after_refresh(self.drawn.set)

async def main():
    app = Bare()
    async with app.run_test(size=(120, 40)) as pilot:
        await app.drawn.wait()
        print(time.time())

asyncio.run(main())
"""


def _bare_start(rows: int) -> float:
    """A fresh interpreter: seconds to a bare Textual app's table of `rows` rows drawn."""
    t0 = time.time()
    result = subprocess.run([sys.executable, "-c", BARE, str(rows)], capture_output=True, text=True, check=True)
    return float(result.stdout.strip()) - t0


def _cold_start(runs_dir: Path) -> tuple[float, float, float]:
    """A fresh interpreter: seconds to the run screen mounted, to the first screenful of runs drawn,
    and to every run in the table."""
    t0 = time.time()
    result = subprocess.run([sys.executable, "-c", COLD, str(runs_dir)], capture_output=True, text=True, check=True)
    painted, first, complete = map(float, result.stdout.split())
    return painted - t0, first - t0, complete - t0


def _import_time() -> float:
    code = "import time; t = time.perf_counter(); import rrdtui.tui.app; print(time.perf_counter() - t)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=5_000_000, help="metric rows in all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the section here instead of stdout")
    parser.add_argument("--start-only", action="store_true",
                        help="only the cold starts, the dashboard's beside a bare Textual table (quick)")  # fmt: skip
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="rrdtui-bench-") as tmp:
        runs_dir = Path(tmp) / "runs"
        t0 = time.perf_counter()
        rows = build_store(runs_dir, args.runs, args.rows)
        build_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in runs_dir.glob("rrdtui.db*")) / 1e6
        print(f"store: {args.runs} runs, {rows:,} metric rows, {size_mb:.0f} MB, built in {build_s:.1f} s")
        from rrdtui.tui.screens.runs import FIRST_CHUNK

        imports = [_import_time() for _ in range(3)]
        # One untimed start of each first (it writes the bytecode caches, where Python may), then
        # alternated, so a change of load on a shared machine falls on both alike.
        _cold_start(runs_dir)
        _bare_start(min(FIRST_CHUNK, args.runs))
        cold, bare = [], []
        for _ in range(args.repeats):
            cold.append(_cold_start(runs_dir))
            bare.append(_bare_start(min(FIRST_CHUNK, args.runs)))
        results = None if args.start_only else asyncio.run(_measure(runs_dir, args.repeats))

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})"

    first = statistics.median(c[1] for c in cold)
    ratio = first / statistics.median(bare)
    if args.start_only:
        print(f"load average {os.getloadavg()[0]:.1f}")
        print(f"import rrdtui.tui.app: {fmt(imports)}")
        print(f"bare Textual table of {min(FIRST_CHUNK, args.runs)} rows drawn: {fmt(bare)}")
        print(f"dashboard, first screenful of runs drawn: {fmt([c[1] for c in cold])}  ({ratio:.2f}x the bare app)")
        print(f"dashboard, all {args.runs} runs in the table: {fmt([c[2] for c in cold])}")
        return

    lines = [
        "## Dashboard speed (`rrdtui.tui.bench`)",
        "",
        f"Command: `uv run python -m rrdtui.tui.bench --runs {args.runs} --rows {args.rows} --repeats {args.repeats}`",
        f"Machine: {_machine()}",
        f"Date: {time.strftime('%Y-%m-%d')}; load average at the end {os.getloadavg()[0]:.1f} (other processes share the machine)",
        f"Store: {args.runs} runs, {rows:,} metric rows, {size_mb:.0f} MB (built in {build_s:.1f} s); "
        "5% running, 3% crashed, 1% diverged, 1% queued, the rest completed.",
        "Headless (Textual `run_test`), 120x40; median (min, max) over the repeats. Refresh times run from",
        "the poll to the changed frame drawn (worker read, message, table update, paint).",
        "",
        "| what | time |",
        "|---|---|",
        f"| `import rrdtui.tui.app` (fresh interpreter, no torch) | {fmt(imports)} |",
        f"| cold start (new process, imports included) to the run list screen up, table empty | {fmt([c[0] for c in cold])} |",
        f"| a bare Textual app (new process) to a table of {min(FIRST_CHUNK, args.runs)} rows drawn: the baseline | {fmt(bare)} |",
        f"| cold start to the first screenful of runs drawn (first {FIRST_CHUNK} rows) | {fmt([c[1] for c in cold])} ({ratio:.2f}x the baseline) |",
        f"| cold start to all {args.runs} runs in the table | {fmt([c[2] for c in cold])} |",
        f"| app start to all runs in the table, in a warm process | {fmt(results['start'])} |",
        f"| one refresh of the run list, nothing changed | {fmt(results['refresh_idle'])} |",
        f"| one refresh, every running run with new metrics and progress | {fmt(results['refresh_live'])} |",
        f"| open a run's detail (all its series, ~{args.rows // args.runs:,} rows) | {fmt(results['detail_open'])} |",
        f"| one incremental detail refresh (new points only) | {fmt(results['detail_refresh'])} |",
        "",
        "How: the run list reads the `runs` table and the `latest` table only (never `metrics`); the first",
        "reads use plain sqlite3, because importing the store module (sqlite-utils, which pulls in numpy and",
        "click) costs about half a second on a small machine: the newest screenful, begun as the app starts",
        "and in the table before its first frame, then the whole list once that frame is drawn. Later reads",
        "go through `Store` (one per worker read), which marks dead running runs as crashed. Unchanged rows",
        "keep their cells; plots read `series(after_step=...)` from the last step they hold. Reads run in",
        "thread workers, one poll at a time. What is left of a cold start is mostly importing Textual itself.",
        "",
    ]
    text = "\n".join(lines)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
