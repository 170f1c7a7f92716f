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

EPOCHS = 3
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
        optim={"lr": 0.05, "milestones": [2]},
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


# -- one run, one trainer (issue reproductions; only what every version of the store offers) -----


def history_once_every_step(store: Store, run_id: str) -> None:
    assert_history_once(store, run_id)
    dupes = store.db.execute(
        "SELECT name, step, COUNT(*) FROM metrics WHERE run_id = ? GROUP BY name, step HAVING COUNT(*) > 1", [run_id]
    ).fetchall()
    assert dupes == []


def ended(store: Store, run_id: str) -> dict | None:
    row = store.get_run(run_id)
    return row if row["status"] not in ("queued", "running") else None


def crashed_run(tmp_path: Path, preset: Path) -> tuple[Path, Store, str]:
    """A real run killed with SIGKILL mid-training: crashed, resumable."""
    runs = tmp_path / "runs"
    run_id = cli("run", preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    store = Store(runs)
    row = wait_for(lambda: started_mid_run(store, run_id), what="the run to be mid-epoch")
    os.kill(row["pid"], signal.SIGKILL)
    wait_for(lambda: store.get_run(run_id)["status"] == "crashed", what="crashed")
    return runs, store, run_id


def test_a_queued_run_whose_launcher_died_reads_crashed_and_can_be_removed_or_resumed(tmp_path, preset):
    runs = tmp_path / "runs"
    # A launcher that writes the run row and dies before it starts any trainer (`... | true`).
    script = (
        "import sys; from rrdtui.config import load_preset; from rrdtui.launcher import create_runs, plan_runs; "
        f"from rrdtui.store import Store; s = Store({str(runs)!r}); "
        f"print(create_runs(plan_runs(load_preset({str(preset)!r}), 'p', s), s)[-1])"
    )
    run_id = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    store = Store(runs)
    row = store.get_run(run_id)
    assert row["status"] == "crashed" and "before it started" in row["error"]
    assert cli("rm", run_id, "-y", "--runs", runs).returncode == 0
    assert store.get_run(run_id) is None


def test_a_run_launched_through_a_closed_pipe_is_never_stuck_queued(tmp_path, preset):
    runs = tmp_path / "runs"
    subprocess.run(
        f"{sys.executable} -m rrdtui.cli run {preset} --detach --runs {runs} | true", shell=True, timeout=600
    )
    store = Store(runs)
    (row,) = store.list_runs()
    # Queued only while a live process owns it: then its trainer runs it (or it reads crashed).
    seen = wait_for(lambda: (r := store.get_run(row["id"]))["status"] != "queued" and r, what="the run to leave queued")
    assert seen["status"] in ("running", "completed", "crashed")
    if seen["status"] == "running":
        cli("stop", row["id"], "--runs", runs)
    assert wait_for(lambda: ended(store, row["id"]), what="an end")["status"] in ("stopped", "completed", "crashed")


def test_sigkill_reads_crashed_and_two_simultaneous_resumes_give_one_trainer_and_one_line(tmp_path, preset):
    runs, store, run_id = crashed_run(tmp_path, preset)  # `run --detach`, then kill -9 mid-epoch
    assert "crashed" in cli("ls", "--runs", runs).stdout
    cmd = [sys.executable, "-m", "rrdtui.cli", "resume", run_id, "--detach", "--runs", str(runs)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    (loser,) = [err for code, _, err in results if code == 2]
    assert loser.count("\n") == 1 and "Traceback" not in loser
    assert f"run {run_id} is already being" in loser and "by pid" in loser
    final = wait_for(lambda: ended(store, run_id), what="the end")
    assert final["status"] == "completed"
    history_once_every_step(store, run_id)
    log = (runs / run_id / "train.log").read_text()
    assert log.count(f"epoch {EPOCHS}/{EPOCHS}") == 1
    exported = cli("export", run_id, "--format", "csv", "--runs", runs).stdout.splitlines()[1:]
    keys = [(line.split(",")[1], line.split(",")[2]) for line in exported]
    assert len(keys) == len(set(keys))


def test_a_suspended_trainer_with_a_stale_heartbeat_stays_running_and_cannot_be_resumed(tmp_path, preset):
    runs = tmp_path / "runs"
    run_id = cli("run", preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    store = Store(runs)
    row = wait_for(lambda: started_mid_run(store, run_id), what="the run to be mid-epoch")
    os.kill(row["pid"], signal.SIGSTOP)  # Ctrl-Z, or a laptop asleep
    try:
        store.update_run(run_id, heartbeat=time.time() - 3600)
        assert store.get_run(run_id)["status"] == "running"
        refused = cli("resume", run_id, "--runs", runs)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr == f"rrdtui: error: run {run_id} is already being trained by pid {row['pid']}\n"
    finally:
        os.kill(row["pid"], signal.SIGCONT)
    # Woken, the same trainer goes on and still answers a stop: it was alive all along.
    wait_for(lambda: (r := store.get_run(run_id))["step"] > row["step"] or r["status"] != "running", what="progress")
    cli("stop", run_id, "--runs", runs)  # it may have completed meanwhile: either end is fine
    final = wait_for(lambda: ended(store, run_id), what="the end")
    assert final["status"] in ("stopped", "completed") and final["pid"] == row["pid"]


def loading_torch(pid: int) -> bool:
    """The trainer process has got as far as loading torch (it has read its run row, not trained)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return True  # gone already: nothing left to wait for


@pytest.mark.parametrize("moment", ["at_once", "while_the_trainer_loads_torch"])
def test_a_stop_sent_while_the_run_starts_is_never_lost(tmp_path, preset, moment):
    runs = tmp_path / "runs"
    store = Store(runs)
    run_id = cli("run", preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    if moment == "at_once":
        stopped = cli("stop", run_id, "--runs", runs)
        assert stopped.returncode == 0, stopped.stderr
    else:  # in this process, so the stop lands while the trainer is still importing torch
        from rrdtui.launcher import request_stop

        pid = store.get_run(run_id)["pid"]
        wait_for(lambda: loading_torch(pid), what="the trainer to load torch")
        request_stop(store, run_id)
    final = wait_for(lambda: ended(store, run_id), what="the end")
    assert final["status"] == "stopped", (final["status"], [e["message"] for e in store.events(run_id)])
    assert final["step"] < EPOCHS * STEPS_PER_EPOCH
