"""Follow trainer runs from the store with a progress bar (the foreground half of `rrdtui run`).

The trainer is a child process in the terminal's process group: Ctrl-C reaches both, the trainer
finishes its step and writes a checkpoint, and this loop waits for that before returning. A second
Ctrl-C leaves at once; the trainer still ends cleanly on its own.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column

if TYPE_CHECKING:
    from rrdtui.store import Store

POLL_SECONDS = 0.5
# The widest "H:MM:SS" the time-left column shows (runs under 100 hours), and the id before the bar.
TIME_WIDTH = 8
ID_WIDTH = 8


def _parts(row: dict, latest: dict[str, float]) -> list[tuple[str, str, str]]:
    """What the line says beside the bar as (what, full text, short text), most important first. A
    narrow terminal shortens them all, then drops them from the end; a number is never cut."""
    parts = []
    if row["status"] not in ("running", "queued"):
        parts.append(("status", f"[{row['status']}]", f"[{row['status']}]"))
    parts.append(("epoch", f"epoch {row['epoch']}/{row['epochs']}", f"ep {row['epoch']}/{row['epochs']}"))
    for key, full, short in (
        ("val/acc", "val {:.1f}%", "val {:.1f}"),
        ("train/loss", "loss {:.3f}", "loss {:.3f}"),
        ("train/acc", "train {:.1f}%", "tr {:.1f}"),
        ("train/throughput", "{:.0f} img/s", "{:.0f}/s"),
    ):
        if key in latest:
            parts.append((key, full.format(latest[key]), short.format(latest[key])))
    parts.append(("name", row["name"], row["name"]))
    return parts


# The order the parts read in on the line.
READING_ORDER = ("name", "epoch", "train/loss", "train/acc", "val/acc", "train/throughput", "status")


def describe(row: dict, latest: dict[str, float], room: int | None = None) -> str:
    """The run's progress in words, in at most `room` columns (None: all of it): the name goes
    first (the id beside the bar names the run too), then every part is shortened, then parts go
    from the least important."""
    parts = _parts(row, latest)
    tries = [(parts, 1, "  "), (parts[:-1], 1, "  ")] + [(parts[:keep], 2, " ") for keep in range(len(parts) - 1, 0, -1)]
    for chosen, form, sep in tries:
        text = sep.join(part[form] for part in sorted(chosen, key=lambda part: READING_ORDER.index(part[0])))
        if room is None or len(text) <= room:
            return text
    return ""


def make_progress(console: Console, get_time: Callable[[], float] | None = None) -> Progress:
    """The bar's columns: run id, bar, step count, what the run says (fitted to the width), time left."""
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=bar_width(console.width)),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False, table_column=Column(no_wrap=True)),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        get_time=get_time,
    )


def bar_width(columns: int) -> int:
    return 24 if columns >= 100 else max(10, columns // 5)


def show(progress: Progress, tasks: dict[str, int], row: dict, latest: dict[str, float]) -> None:
    """Add or update the bar of one run, its words fitted to what the terminal has left."""
    total = row["total_steps"] or None
    if row["id"] not in tasks:
        tasks[row["id"]] = progress.add_task(row["id"], total=total, info="starting")
    progress.columns[1].bar_width = bar_width(progress.console.width)  # the terminal may have been resized
    steps = max(len(str(int(t.total))) if t.total else 1 for t in progress.tasks) * 2 + 1
    fixed = ID_WIDTH + progress.columns[1].bar_width + steps + TIME_WIDTH + 4  # 4 single-space gaps
    info = describe(row, latest, progress.console.width - fixed)
    progress.update(tasks[row["id"]], completed=row["step"] or 0, total=total, info=info)


def follow(store, ids: list[str], proc: subprocess.Popen) -> None:
    console = Console(stderr=True)
    interrupted = False
    if not console.is_terminal:
        _follow_plain(store, ids, proc)
        return
    progress = make_progress(console)
    tasks: dict[str, int] = {}
    with progress:
        while True:
            try:
                done = proc.poll() is not None  # read before the update, so the last state shows
                for run_id in ids:
                    row = store.get_run(run_id)
                    if row["status"] == "queued" and run_id not in tasks:
                        continue
                    show(progress, tasks, row, store.latest(run_id))
                if done:
                    break
                time.sleep(POLL_SECONDS)
            except KeyboardInterrupt:
                if interrupted:
                    console.print("leaving; the trainer finishes its step and stops on its own")
                    return
                interrupted = True
                console.print("stopping cleanly after this step (Ctrl-C again to leave now)...")


def _follow_plain(store: Store, ids: list[str], proc: subprocess.Popen) -> None:
    """Without a terminal (a pipe, CI): one line per finished epoch instead of a live bar."""
    seen: dict[str, tuple[int, str]] = {}
    while True:
        try:
            done = proc.poll() is not None
            for run_id in ids:
                row = store.get_run(run_id)
                key = (row["epoch"], row["status"])
                if row["status"] != "queued" and seen.get(run_id) != key:
                    seen[run_id] = key
                    print(f"{run_id} {describe(row, store.latest(run_id))}", file=sys.stderr)
            if done:
                break
            time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            print("stopping cleanly after this step...", file=sys.stderr)
            proc.wait()
            break
