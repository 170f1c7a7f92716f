"""Vanilla, KD and RRD students of one Fashion-MNIST teacher over three seeds, then the table.

Usage: uv run python scripts/fmnist_study.py [--runs DIR]
Resumable: a (method, seed) pair with a completed run in the store is not trained again, and the
teacher (presets/fmnist_teacher.yaml) is trained once, by the first student that needs it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rrdtui.store import Store

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("none", "kd", "rrd")
SEEDS = (0, 1, 2)


def done(store: Store, name: str, seed: int) -> bool:
    return any(
        r["name"] == name and r["status"] == "completed" and json.loads(r["config"])["seed"] == seed
        for r in store.list_runs()
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs")
    args = parser.parse_args()
    store = Store(args.runs)
    for seed in SEEDS:
        for method in METHODS:
            name = f"fmnist_{method}"
            if done(store, name, seed):
                continue
            cmd = [sys.executable, "-m", "rrdtui.cli", "run", str(ROOT / "presets/fmnist_student.yaml"),
                   "--runs", args.runs, "--set", f"method.name={method}", "--set", f"seed={seed}",
                   "--set", f"name={name}", "--set", "group=fmnist_study"]  # fmt: skip
            print("+", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/seed_table.py"), "--runs", args.runs, *(f"fmnist_{m}" for m in METHODS)],
        check=True,
    )


if __name__ == "__main__":
    main()
