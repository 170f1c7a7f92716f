"""Runs that outlive the terminal: real trainer processes killed, stopped, hung up on and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrdtui.store import Store

from conftest import write_preset

EPOCHS = 5
STEPS_PER_EPOCH = 16  # 256 images in batches of 16


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rrdtui.cli", *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    # Long enough (in steps) to be interrupted mid-epoch, small enough to finish in seconds.
    return write_preset(
        tmp_path,
        "lifecycle",
        data={"name": "synthetic", "num_classes": 4, "train_size": 256, "val_size": 64, "probe_size": 32},
        student={"arch": "resnet8"},
        method={"name": "none"},
        optim={"lr": 0.05, "milestones": [4]},
        train={"epochs": EPOCHS, "batch_size": 16, "device": "cpu", "log_every": 1},
    )


def wait_for(predicate, seconds: float = 600, what: str = "condition"):
    # `seconds` guards against a hang; it is no speed bound (a machine at load 8 stays far inside it).
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def started_mid_run(store: Store, run_id: str) -> dict | None:
    row = store.get_run(run_id)
    return row if row["status"] == "running" and row["epoch"] >= 1 and row["step"] % STEPS_PER_EPOCH not in (0, STEPS_PER_EPOCH - 1) else None


def assert_history_once(store: Store, run_id: str) -> None:
    epochs = [e for _, e, _ in store.series(run_id, "val/acc")]
    assert epochs == [float(e) for e in range(1, EPOCHS + 1)], epochs
    steps = [s for s, _, _ in store.series(run_id, "train/loss")]
    assert steps == sorted(set(steps)) and steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))


def test_detach_returns_an_id_at_once_and_sigkill_reads_crashed_then_resume_completes(tmp_path, preset):
    runs = tmp_path / "runs"
    launched = cli("run", preset, "--detach", "--runs", runs)
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    store = Store(runs)
    row = wait_for(lambda: started_mid_run(store, run_id), what="the run to be mid-epoch")
    os.kill(row["pid"], signal.SIGKILL)
    wait_for(lambda: store.get_run(run_id)["status"] == "crashed", what="crashed")
    assert "crashed" in cli("ls", "--runs", runs).stdout

    resumed = cli("resume", run_id, "--runs", runs)
    assert resumed.returncode == 0, resumed.stderr
    assert store.get_run(run_id)["status"] == "completed"
    assert_history_once(store, run_id)
    exported = cli("export", run_id, "--format", "csv", "--runs", runs).stdout.splitlines()[1:]
    keys = [(line.split(",")[1], line.split(",")[2]) for line in exported]
    assert len(keys) == len(set(keys))


def test_sigterm_stops_cleanly_and_resume_completes(tmp_path, preset):
    runs = tmp_path / "runs"
    run_id = cli("run", preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    store = Store(runs)
    wait_for(lambda: started_mid_run(store, run_id), what="the run to be mid-epoch")
    stopped = cli("stop", run_id, "--runs", runs)
    assert stopped.returncode == 0 and "stop requested" in stopped.stdout
    row = wait_for(lambda: (r := store.get_run(run_id))["status"] not in ("running",) and r, what="stopped")
    assert row["status"] == "stopped", row
    assert (Path(row["run_dir"]) / "last.pt").exists()
    assert cli("resume", run_id, "--runs", runs).returncode == 0
    assert store.get_run(run_id)["status"] == "completed"
    assert_history_once(store, run_id)


def test_hangup_of_the_launching_terminal_leaves_the_run_running(tmp_path, preset):
    runs = tmp_path / "runs"
    # The launcher runs in a session of its own, standing in for a terminal that then hangs up.
    launcher = subprocess.Popen(
        [sys.executable, "-m", "rrdtui.cli", "run", str(preset), "--detach", "--runs", str(runs)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    run_id = launcher.communicate(timeout=60)[0].strip().splitlines()[-1]
    store = Store(runs)
    row = wait_for(lambda: started_mid_run(store, run_id), what="the run to be mid-epoch")
    try:
        os.killpg(launcher.pid, signal.SIGHUP)
    except ProcessLookupError:
        pass  # the launcher's group is already gone, as after a closed SSH session
    os.kill(row["pid"], signal.SIGHUP)  # even a hang-up sent to the trainer itself is ignored
    # Still going: it trains on past the step it was at (or has completed); a hang-up that ended
    # it would read crashed, a stop stopped.
    wait_for(
        lambda: (r := store.get_run(run_id))["status"] == "completed" or (r["status"] == "running" and r["step"] > row["step"]),
        what="training to go on after the hang-up",
    )
    wait_for(lambda: store.get_run(run_id)["status"] not in ("running", "queued"), what="the run to end")
    assert store.get_run(run_id)["status"] == "completed"
    assert_history_once(store, run_id)


def test_ctrl_c_in_the_foreground_stops_cleanly(tmp_path, preset):
    runs = tmp_path / "runs"
    # A terminal sends SIGINT to its whole foreground process group: the CLI and its trainer.
    proc = subprocess.Popen(
        [sys.executable, "-m", "rrdtui.cli", "run", str(preset), "--runs", str(runs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    store = wait_for(lambda: (runs / "rrdtui.db").exists() and Store(runs), what="the store")
    run_id = wait_for(lambda: (rows := store.list_runs()) and rows[0]["id"], what="the run row")
    wait_for(lambda: started_mid_run(store, run_id), what="the run to be mid-epoch")
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    row = store.get_run(run_id)
    assert row["status"] == "stopped" and (Path(row["run_dir"]) / "last.pt").exists()
