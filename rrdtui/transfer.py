"""Transfer evaluation, the paper's linear probe: a completed run's backbone, frozen, on a new data set.

`rrdtui transfer RUN --data stl10|tiny_imagenet` builds a configuration that starts from the run's
`last.pt` (student.init), freezes everything but a new final classifier (student.freeze: the
backbone stays in eval mode, so its BatchNorm statistics do not move) and trains that classifier
with plain cross-entropy on STL-10 or Tiny-ImageNet resized to 32x32: 120 epochs, lr 0.05 divided by
10 at epochs 30, 60 and 90, batch 64, weight decay 5e-4 (reference/RRD.md). The probe is a run of its
own in the store (group `transfer`), started like any other. No torch here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from rrdtui.config import Config, ConfigError, apply_overrides, from_mapping
from rrdtui.reference import transfer_numbers
from rrdtui.registry import paper_key as method_paper_key
from rrdtui.store import Store

TRANSFER_DATA = ("stl10", "tiny_imagenet")

# The linear-probe recipe of the paper (and of CRD, whose code it shares).
RECIPE: dict[str, Any] = {
    "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "milestones": [30, 60, 90]},
    "train": {"epochs": 120, "batch_size": 64},
}


def paper_key(source: dict[str, Any]) -> str | None:
    """The row of the paper's transfer table a run reproduces, or None.

    The table probes WRN-16-2 networks trained on CIFAR-100: distilled from WRN-40-2 (by KD, CRD,
    RRD, ...), trained alone ("student"), and the WRN-40-2 teacher itself ("teacher").
    """
    if (source.get("data") or {}).get("name") != "cifar100":
        return None
    method = (source.get("method") or {}).get("name")
    student = (source.get("student") or {}).get("arch")
    teacher = (source.get("teacher") or {}).get("arch")
    if method == "none":
        return {"wrn_16_2": "student", "wrn_40_2": "teacher"}.get(student)
    if (teacher, student) == ("wrn_40_2", "wrn_16_2"):
        return method_paper_key(method)
    return None


def transfer_config(row: dict[str, Any], data: str, overrides: list[str] | None = None) -> Config:
    """The linear probe of a completed run `row` (a store row) on `data`. Raises ConfigError."""
    if data not in TRANSFER_DATA:
        raise ConfigError(f"--data must be {' or '.join(TRANSFER_DATA)}, got '{data}'")
    if row["status"] != "completed":
        raise ConfigError(
            f"run {row['id']} is {row['status']}: only a completed run can be probed (finish or resume it first)"
        )
    weights = Path(row["run_dir"]) / "last.pt"
    if not weights.is_file():
        raise ConfigError(f"run {row['id']} has no {weights}: its final weights are needed for the probe")
    source = json.loads(row["config"]) if row.get("config") else {}
    arch = (source.get("student") or {}).get("arch") or row["student_arch"]
    raw: dict[str, Any] = {
        "name": f"transfer_{data}_{row['name']}",
        "description": f"Linear probe on {data} (32x32) of run {row['id']} ({row['name']}, {arch}): frozen backbone, new classifier.",
        "group": "transfer",
        "seed": source.get("seed", 0),
        "data": {"name": data, "image_size": 32},
        "student": {"arch": arch, "init": str(weights.resolve()), "freeze": True},
        "method": {"name": "none"},
        "optim": dict(RECIPE["optim"]),
        "train": {**RECIPE["train"], "device": (source.get("train") or {}).get("device", "auto")},
    }
    key = paper_key(source)
    numbers = transfer_numbers(data) if key else None
    if numbers and key in numbers:
        raw["paper"] = {key: numbers[key]}
    origin = f"transfer of run {row['id']}"
    if overrides:
        try:
            raw = apply_overrides(raw, overrides)
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        origin += " (with --set)"
    return from_mapping(raw, origin)


def start_transfer(
    store: Store, run_ref: str, data: str, overrides: list[str] | None = None, detach: bool = False
) -> tuple[list[str], subprocess.Popen]:
    """Create the probe of `run_ref` as a run of its own and start its trainer; return (ids, process)."""
    from rrdtui.datacheck import check_data
    from rrdtui.launcher import Plan, PlannedRun, create_runs, spawn_worker

    row = store.resolve_run(run_ref)
    cfg = transfer_config(row, data, overrides)
    check_data(cfg)
    ids = create_runs(Plan(runs=[PlannedRun(config=cfg, preset=f"transfer:{row['id']}")]), store)
    store.event(ids[-1], "info", f"linear probe of run {row['id']} ({row['name']}) on {data}")
    return ids, spawn_worker(store, ids, detach=detach)
