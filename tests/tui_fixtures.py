"""A store and presets on fixed data for the dashboard's tests, snapshots, benchmark and demos.

Everything shown is deterministic: fixed ids, fixed times (FIXED_NOW), values from smooth formulas.
The one live thing is the running run's liveness (its lock, pid and heartbeat, which the dashboard
never shows): the calling process owns it, holding its lock as a trainer would (`release_run` lets it
go: the trainer is gone), and its heartbeat is a day ahead of the real clock, so the store keeps it
"running" however long a test takes.

`wait_for` is how the dashboard's tests wait: on a condition, never on the clock.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from rrdtui.config import Config
from rrdtui.ownership import RunLock
from rrdtui.store import Store

FIXED_NOW = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
DAY = 86_400.0
STEPS_PER_EPOCH = 100
LOG_EVERY = 25
# resnet32x4 -> resnet8x4 on CIFAR-100 (paper_results.yaml).
PAPER = {"teacher": 79.42, "student": 72.50, "KD": 73.33, "CRD": 75.51, "CRD+KD": 75.46, "RRD": 74.48, "RRD+KD": 75.08}

# id, name, method, tau_s, tau_t, status, epochs done, final accuracy, created (days before FIXED_NOW)
RUNS = (
    ("a0000001", "teacher_resnet32x4", "none", 0.04, 0.1, "completed", 30, 79.1, 3.0),
    ("b0000002", "kd_r32x4_r8x4", "kd", 0.04, 0.1, "completed", 30, 73.6, 2.5),
    ("c0000003", "rrd_r32x4_r8x4", "rrd", 0.04, 0.1, "completed", 30, 74.6, 2.0),
    ("d0000004", "rrdkd_r32x4_r8x4", "rrd+kd", 0.04, 0.1, "running", 18, 75.2, 0.05),
    ("e0000005", "rrd_2025_taus", "rrd", 0.1, 0.02, "crashed", 9, 74.0, 1.0),
    ("f0000006", "crd_r32x4_r8x4", "crd", 0.04, 0.1, "diverged", 4, 75.0, 0.8),
    ("0a000007", "rrd_tau_s_0.05", "rrd", 0.05, 0.1, "queued", 0, 74.5, 0.01),
)
EPOCHS = 30

# The locks of the running runs made here, by run folder: held by this process until `release_run`.
_OWNED: dict[Path, RunLock] = {}


def release_run(runs_dir: Path, run_id: str) -> None:
    """The owner of a running run from `make_store` goes away: its lock is dropped."""
    lock = _OWNED.pop((Path(runs_dir) / run_id).resolve(), None)
    if lock is not None:
        lock.release()


def make_config(name: str, method: str, tau_s: float = 0.04, tau_t: float = 0.1, *, epochs: int = EPOCHS,
                teacher: str = "resnet32x4", student: str = "resnet8x4", data: str = "cifar100",
                paper: dict | None = PAPER, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """A resolved configuration as the launcher stores it."""
    cfg = Config().to_dict()
    cfg["name"] = name
    cfg["seed"] = seed
    cfg["group"] = "r32x4_r8x4"
    cfg["data"]["name"] = data
    cfg["train"]["epochs"] = epochs
    cfg["method"].update({"name": method, "tau_s": tau_s, "tau_t": tau_t})
    from rrdtui.registry import default_weights

    cfg["method"].update(default_weights(method))
    if method == "none":
        cfg["student"]["arch"] = teacher
        cfg["paper"] = None
    else:
        cfg["student"]["arch"] = student
        cfg["teacher"].update({"arch": teacher, "run": "a0000001"})
        cfg["paper"] = dict(paper) if paper else None
    return cfg


def _wiggle(i: int, k: float = 1.0) -> float:
    return 0.5 * math.sin(0.7 * i * k) + 0.3 * math.cos(1.3 * i * k)


def metric_rows(run_id: str, method: str, tau_s: float, tau_t: float, epochs_done: int, final: float,
                start: float, diverge: bool = False) -> list[tuple]:  # fmt: skip
    """(run_id, step, epoch, name, value, time) rows for a run of `epochs_done` epochs."""
    rows: list[tuple] = []
    add = rows.append
    if method != "none":
        add((run_id, 0, 0.0, "teacher/val_acc", 79.42, start))
    for e in range(epochs_done):
        for k in range(LOG_EVERY, STEPS_PER_EPOCH + 1, LOG_EVERY):
            step = e * STEPS_PER_EPOCH + k
            ep = step / STEPS_PER_EPOCH
            t = start + step
            ce = 3.0 * math.exp(-ep / 8) + 0.6 + 0.05 * _wiggle(step)
            terms = {"train/loss_ce": ce}
            if method in ("kd", "rrd+kd", "crd+kd"):
                terms["train/loss_kd"] = 1.5 * math.exp(-ep / 10) + 0.3 + 0.03 * _wiggle(step, 1.7)
            if method.startswith("rrd"):
                terms["train/loss_rrd"] = 9.0 - 2.5 * (1 - math.exp(-ep / 6)) + 0.04 * _wiggle(step, 0.3)
            if method.startswith("crd"):
                terms["train/loss_crd"] = 12.0 * math.exp(-ep / 12) + 4 + 0.05 * _wiggle(step, 0.9)
            total = sum(terms.values())
            if diverge and e == epochs_done - 1 and k >= 75:
                total = float("nan")
            terms["train/loss"] = total
            terms["train/acc"] = min(
                99.0, final * (1 - math.exp(-ep / 5)) + 8 * (1 - math.exp(-ep / 20)) + _wiggle(step)
            )
            terms["train/lr"] = 0.05 if ep < 20 else 0.005
            terms["train/throughput"] = 2400.0 + 40 * _wiggle(step, 2.1)
            for name, value in terms.items():
                add((run_id, step, ep, name, value, t))
        step = (e + 1) * STEPS_PER_EPOCH
        ep = float(e + 1)
        t = start + step + 5
        acc = final * (1 - math.exp(-ep / 6)) + 0.4 * _wiggle(e)
        stats = {
            "val/acc": acc,
            "val/loss": 2.8 * math.exp(-ep / 9) + 1.0 + 0.02 * _wiggle(e),
        }
        if method != "none":
            stats.update({
                "sim/agreement": 85 * (1 - math.exp(-ep / 7)) + _wiggle(e),  # percent, as the trainer writes it
                "sim/kl": 2.5 * math.exp(-ep / 8) + 0.35,
                "sim/cka": 0.9 * (1 - math.exp(-ep / 9)),
                "sim/relation_corr": 0.8 * (1 - math.exp(-ep / 10)),
                "sim/logit_corr_diff": 0.25 * math.exp(-ep / 10) + 0.05,
            })  # fmt: skip
        if method.startswith("rrd"):
            log_k = math.log(16384)
            stats["rrd/entropy_t"] = log_k * (0.55 + 0.45 * tau_t / (tau_t + tau_s)) * 0.9
            stats["rrd/entropy_s"] = log_k * (0.97 - 0.4 * (1 - math.exp(-ep / 6)) * (tau_t / (tau_t + tau_s)))
        for name, value in stats.items():
            add((run_id, step, ep, name, value, t))
    return rows


def make_store(runs_dir: Path, *, now: float = FIXED_NOW, with_logs: bool = True) -> dict[str, str]:
    """Fill `runs_dir` with the runs of RUNS; returns {name: id}."""
    store = Store(runs_dir)
    ids = {}
    try:
        for run_id, name, method, tau_s, tau_t, status, done, final, days in RUNS:
            cfg = make_config(name, method, tau_s, tau_t)
            created = now - days * DAY
            started = created + 60 if status != "queued" else None
            total_steps = EPOCHS * STEPS_PER_EPOCH
            fields: dict[str, Any] = dict(
                id=run_id, status=status, preset=f"presets/{name.split('_')[0]}.yaml", created=created,
                started=started, epoch=done, step=done * STEPS_PER_EPOCH, total_steps=total_steps,
            )  # fmt: skip
            if method != "none":
                fields["teacher_acc"] = 79.42
                fields["teacher_run"] = "a0000001"
            if status == "running":
                # A day ahead: never stale while a test runs, on however loaded a machine.
                fields.update(pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time() + DAY)
            elif status == "completed":
                fields.update(ended=started + 3000, heartbeat=started + 3000)
            elif status in ("crashed", "diverged"):
                fields.update(ended=started + done * 100 + 30, heartbeat=started + done * 100)
                fields["error"] = (
                    "the trainer process is gone (no heartbeat since 2025-06-14 15:10:00)"
                    if status == "crashed"
                    else "loss is nan at step 375 (epoch 3.75): diverged"
                )
            store.create_run(cfg, **fields)
            if status == "running":
                run_dir = store.run_dir(run_id)
                lock = RunLock(run_dir)
                assert lock.acquire(), f"{run_dir} is owned by another process"
                _OWNED[run_dir.resolve()] = lock
            rows = metric_rows(run_id, method, tau_s, tau_t, done, final, started or created, status == "diverged")
            store.insert_metrics(rows)
            accs = [r[4] for r in rows if r[3] == "val/acc"]
            if accs and status != "running":
                store.update_run(run_id, best_acc=max(accs))
            store.db["events"].insert(
                {"run_id": run_id, "time": created, "level": "info", "message": f"launched {name}"}
            )
            if fields.get("error"):
                store.db["events"].insert(
                    {"run_id": run_id, "time": fields["ended"], "level": "error", "message": fields["error"]}
                )
            if with_logs:
                lines = [f"[{run_id}] {name}: {method} resnet32x4 -> resnet8x4 on cifar100"]
                for e in range(done):
                    acc = [r[4] for r in rows if r[3] == "val/acc"][e]
                    lines.append(f"epoch {e + 1:3d}/{EPOCHS}  val/acc {acc:6.2f}")
                if fields.get("error"):
                    lines.append(f"ERROR {fields['error']}")
                (runs_dir / run_id / "train.log").write_text("\n".join(lines) + "\n")
            ids[name] = run_id
    finally:
        store.close()
    return ids


# A hang guard, not a deadline: every `pilot.pause()` sleeps at least 20 ms (Textual's wait for an
# idle app), so this many of them take two minutes or more, far beyond what a condition that does
# come true needs on a machine at load 8; only a hung app reaches it.
MAX_PAUSES = 6000


def widget_lines(widget) -> list[str]:
    """The lines a widget draws now, as plain text: what the terminal would show of it."""
    from textual.geometry import Region

    width, height = widget.size
    return [strip.text for strip in widget.render_lines(Region(0, 0, width, height))]


async def wait_for(pilot, condition: Callable[[], object], what: str = "the app") -> None:
    """Yield to the app (`pilot.pause()`) until `condition()` is true."""
    for _ in range(MAX_PAUSES):
        if condition():
            return
        await pilot.pause()
    if not condition():
        raise AssertionError(f"{what}: the condition never came true ({MAX_PAUSES} pauses)")


PRESETS = {
    "demo_teacher.yaml": {
        "name": "demo_teacher",
        "description": "A small resnet8 teacher on synthetic data: trains in seconds on a CPU.",
        "seed": 0,
        "data": {"name": "synthetic", "num_classes": 10, "train_size": 2000, "val_size": 500},
        "student": {"arch": "resnet8"},
        "method": {"name": "none"},
        "optim": {"milestones": [1]},
        "train": {"epochs": 2, "batch_size": 64},
    },
    "demo_rrd.yaml": {
        "name": "demo_rrd",
        "description": "RRD from the demo teacher on synthetic data, published temperatures (tau_s 0.04, tau_t 0.1).",
        "seed": 0,
        "data": {"name": "synthetic", "num_classes": 10, "train_size": 2000, "val_size": 500},
        "teacher": {"preset": "demo_teacher.yaml"},
        "student": {"arch": "resnet8"},
        "method": {"name": "rrd", "tau_s": 0.04, "tau_t": 0.1, "queue_size": 1024},
        "optim": {"lr": 0.05, "milestones": [2]},
        "train": {"epochs": 3, "batch_size": 64},
    },
}


def write_presets(presets_dir: Path) -> list[Path]:
    presets_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, raw in PRESETS.items():
        path = presets_dir / file
        path.write_text(f"# {raw['name']}\n" + yaml.safe_dump(raw, sort_keys=False))
        paths.append(path)
    return paths


if __name__ == "__main__":  # build a demo store: python -m tests.tui_fixtures /tmp/tuidemo
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tuidemo")
    print(make_store(target, now=time.time()))
    write_presets(target / "presets")
    print(f"store in {target}, presets in {target / 'presets'}")
