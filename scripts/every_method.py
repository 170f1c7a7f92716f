"""Train the demo (or any preset) once with every registered method, through the CLI, and tabulate.

Usage: uv run python scripts/every_method.py [--preset presets/demo.yaml] [--runs DIR] [--set k=v ...]
Each method runs as `rrdtui run PRESET --set method.name=NAME` with the extra overrides (for a quick
pass: --set train.epochs=1 --set optim.milestones=[1]); the preset's teacher is trained by the first
student that needs it and reused by the rest. Prints one row per method: status, val/acc, seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rrdtui.registry import methods
from rrdtui.store import Store

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default=str(ROOT / "presets" / "demo.yaml"))
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    rows = []
    for name, info in methods().items():
        if not info.teacher:
            continue  # "none" trains no student of a teacher
        cmd = [sys.executable, "-m", "rrdtui.cli", "run", args.preset, "--runs", args.runs, "--detach"]
        cmd += [f"--set=method.name={name}"] + [f"--set={o}" for o in args.overrides]
        start = time.perf_counter()
        launched = subprocess.run(cmd, capture_output=True, text=True)
        if launched.returncode != 0:
            rows.append((name, "refused", None, 0.0, launched.stderr.strip()))
            continue
        run_id = launched.stdout.strip().splitlines()[-1]
        store = Store(args.runs)
        while (row := store.get_run(run_id))["status"] in ("queued", "running"):
            time.sleep(1)
        seconds = time.perf_counter() - start
        rows.append((name, row["status"], store.latest(run_id).get("val/acc"), seconds, row.get("error") or ""))
        store.close()
        print(json.dumps(rows[-1]), flush=True)

    print(f"\n| method | status | val/acc | seconds |\n|---|---|---|---|")
    for name, status, acc, seconds, error in rows:
        acc_text = f"{acc:.2f}" if acc is not None else "-"
        print(f"| {name} | {status}{(': ' + error) if error else ''} | {acc_text} | {seconds:.0f} |")
    return 0 if all(r[1] == "completed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
