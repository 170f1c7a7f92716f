"""Follow trainer runs from the store with a progress bar (the foreground half of `rrdtui run`).

The trainer is a child process in the terminal's process group: Ctrl-C reaches both, the trainer
finishes its step and writes a checkpoint, and this loop waits for that before returning. A second
Ctrl-C leaves at once; the trainer still ends cleanly on its own.
"""

from __future__ import annotations

import subprocess
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rrdtui.store import Store

POLL_SECONDS = 0.5


def _describe(row: dict, latest: dict[str, float]) -> str:
    parts = [f"epoch {row['epoch']}/{row['epochs']}"]
    for key, label, fmt in (
        ("train/loss", "loss", "{:.3f}"),
        ("train/acc", "train", "{:.1f}%"),
        ("val/acc", "val", "{:.1f}%"),
        ("train/throughput", "", "{:.0f} img/s"),
    ):
        if key in latest:
            parts.append((label + " " if label else "") + fmt.format(latest[key]))
    return "  ".join(parts)


def follow(store: Store, ids: list[str], proc: subprocess.Popen) -> None:
    console = Console(stderr=True)
    interrupted = False
    if not console.is_terminal:
        _follow_plain(store, ids, proc)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, int] = {}
    with progress:
        while True:
            try:
                done = proc.poll() is not None  # read before the update, so the last state shows
                for run_id in ids:
                    row = store.get_run(run_id)
                    if row["status"] == "queued" and run_id not in tasks:
                        continue
                    if run_id not in tasks:
                        label = f"{row['name'][:18]:<18s} {row['id']}"
                        tasks[run_id] = progress.add_task(label, total=row["total_steps"] or None, info="starting")
                    latest = store.latest(run_id)
                    info = _describe(row, latest)
                    if row["status"] not in ("running", "queued"):
                        info += f"  [{row['status']}]"
                    progress.update(tasks[run_id], completed=row["step"] or 0, total=row["total_steps"] or None, info=info)
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
                    print(f"{row['name']} {run_id} [{row['status']}] {_describe(row, store.latest(run_id))}", file=sys.stderr)
            if done:
                break
            time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            print("stopping cleanly after this step...", file=sys.stderr)
            proc.wait()
            break
