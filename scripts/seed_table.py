"""Mean and spread over seeds of final and best val/acc per run name, as a Markdown table.

Usage: uv run python scripts/seed_table.py [--runs DIR] NAME [NAME ...]
Reads the store only (completed runs); no torch.
"""

from __future__ import annotations

import argparse
import json
import statistics

from rrdtui.store import Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    store = Store(args.runs)
    print("| run name | method | seeds | final val/acc (mean ± sd) | best val/acc (mean ± sd) | teacher acc |")
    print("|---|---|---|---|---|---|")
    for name in args.names:
        rows = [r for r in store.list_runs() if r["name"] == name and r["status"] == "completed"]
        if not rows:
            print(f"| {name} | - | 0 | - | - | - |")
            continue
        finals = [store.latest(r["id"])["val/acc"] for r in rows]
        bests = [r["best_acc"] for r in rows]
        seeds = sorted(json.loads(r["config"])["seed"] for r in rows)
        teacher = [r["teacher_acc"] for r in rows if r["teacher_acc"] is not None]

        def spread(values):
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.2f} ± {sd:.2f}"

        teacher_text = f"{statistics.mean(teacher):.2f}" if teacher else "-"
        seeds_text = ",".join(map(str, seeds))
        print(f"| {name} | {rows[0]['method']} | {seeds_text} | {spread(finals)} | {spread(bests)} | {teacher_text} |")


if __name__ == "__main__":
    main()
