"""Several processes, one run: torchrun starting real processes, gloo on the CPU.

Two processes of 32 images train what one process of 64 trains; one process writes; a rank killed
with kill -9, a stop and a resume read as they do for one process; two launches joined by a c10d
rendezvous (two "nodes" on this machine) train one run.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rrdtui.store import Store

from conftest import write_preset
from test_lifecycle import wait_for


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rrdtui.cli", *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd
    )


# -- the same training on 1 and 2 processes ------------------------------------------------------

# 640 images in global batches of 64: 10 steps an epoch, 20 in two. Contiguous tensors: the CPU's
# channels_last BatchNorm accumulates in float32, and its gradients sit 7e-4 (relative) from the
# exact ones, while two processes' global BatchNorm sums in float64 (BENCHMARKS.md). A small learning
# rate: these tiny ReLU networks amplify rounding. A 1e-7 perturbation of one process's own initial
# weights moves its weights after 20 steps by up to 1e-2 (relative) at lr 0.05, 2e-4 at 0.005, 9e-6
# at 0.001 and 3e-6 at 0.0005 (CRD the most): float rounding, whatever the number of processes
# (BENCHMARKS.md, "Several processes").
EQUIVALENCE = {
    "data": {"name": "synthetic", "num_classes": 4, "train_size": 640, "val_size": 64, "probe_size": 32},
    "student": {"arch": "resnet8"},
    "optim": {"lr": 0.0005, "milestones": [2]},
    "train": {"epochs": 2, "batch_size": 64, "device": "cpu", "log_every": 5, "channels_last": False},
}
METHODS = {"none": {}, "kd": {}, "rrd": {"queue_size": 256}, "crd": {"crd_negatives": 64}}
STEPS = 20


def relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||a|| over every floating-point tensor of two state dicts."""
    keys = [k for k, v in a.items() if v.is_floating_point()]
    diff = sum(float((a[k].double() - b[k].double()).norm() ** 2) for k in keys)
    return (diff / sum(float(a[k].double().norm() ** 2) for k in keys)) ** 0.5


def parameters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, teacher_file):
    """The last checkpoint and train/loss history of a method trained on n processes (cached)."""
    results = {}

    def get(method: str, nproc: int, *sets: str):
        key = (method, nproc, sets)
        if key not in results:
            folder = tmp_path_factory.mktemp(f"{method.replace('+', '_')}-{nproc}")
            teacher = {"teacher": {"checkpoint": teacher_file, "arch": "resnet14"}} if method != "none" else {}
            preset = write_preset(folder, "equal", method={"name": method, **METHODS[method]}, **teacher, **EQUIVALENCE)
            sets = ["--set", f"train.nproc={nproc}", *(x for s in sets for x in ("--set", s))]
            done = cli("run", preset, "--runs", folder / "runs", *sets)
            assert done.returncode == 0, done.stderr + done.stdout
            store = Store(folder / "runs")
            (row,) = store.list_runs()
            state = torch.load(Path(row["run_dir"]) / "last.pt", weights_only=True)
            results[key] = state, [v for _, _, v in store.series(row["id"], "train/loss")], row
        return results[key]

    return get


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_of_32_images_train_what_one_process_of_64_trains(trained, method):
    one, one_loss, _ = trained(method, 1)
    two, two_loss, row = trained(method, 2)
    assert one["step"] == two["step"] == STEPS and two["world_size"] == 2
    figures = {
        "parameters": relative(parameters(one["model"]), parameters(two["model"])),
        "with BatchNorm statistics": relative(one["model"], two["model"]),
        "memory": relative(one["method"], two["method"]) if method in ("rrd", "crd") else 0.0,
        "train/loss": max(abs(a - b) / abs(a) for a, b in zip(one_loss, two_loss)),
    }
    print(f"\n{method}, 2 processes against 1: " + ", ".join(f"{k} {v:.1e}" for k, v in figures.items()))
    assert figures["parameters"] < 1e-5
    assert figures["with BatchNorm statistics"] < 1e-5
    if method == "rrd":  # the queue holds every rank's keys, in the order one process enqueued them
        assert relative(one["method"], two["method"]) < 1e-5
        assert int(one["method"]["queue.pointer"]) == int(two["method"]["queue.pointer"])
    if method == "crd":  # both memory banks, every row updated as by one process
        assert relative(one["method"], two["method"]) < 1e-5
    # The metrics are reduced over the ranks before rank 0 stores them: the global batch's.
    assert len(one_loss) == len(two_loss) == STEPS // 5
    assert two_loss == pytest.approx(one_loss, rel=1e-4)
    assert '"world_size": 2' in row["env"] and '"per_process_batch": 32' in row["env"]


def test_without_gather_each_process_keeps_a_queue_of_its_own(trained):
    one, _, _ = trained("rrd", 1)
    apart, _, _ = trained("rrd", 2, "method.gather=false")
    # Rank 0's queue took its 32 keys a step: a quarter as many rows of it were ever replaced, and
    # the ones that were hold other images' keys.
    assert relative(one["method"], apart["method"]) > 0.1
    assert int(apart["method"]["queue.pointer"]) == (STEPS * 32) % 256 != int(one["method"]["queue.pointer"])
    moved = relative(parameters(one["model"]), parameters(apart["model"]))
    print(f"\nrrd, 2 processes with method.gather false against 1: parameters {moved:.1e}")
    assert moved > 1e-4  # the switch is real: ten times the equivalence bound


# -- refusals, before any run row --------------------------------------------------------------


def test_a_batch_that_does_not_split_and_a_node_without_rendezvous_are_refused_in_one_line(tmp_path):
    preset = write_preset(tmp_path, "p", method={"name": "none"}, **EQUIVALENCE)
    for sets, words in (
        (["train.nproc=3"], "train.batch_size 64 does not split evenly over 3 processes"),
        (["train.nnodes=2"], "train.nnodes 2 needs train.rdzv_endpoint"),
        (["train.nproc=2", "train.device=cuda:1"], "train.device cuda:1 names one device but 2 processes"),
    ):
        refused = cli("run", preset, "--runs", tmp_path / "runs", *(x for s in sets for x in ("--set", s)))
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and words in refused.stderr, refused.stderr
    assert not (tmp_path / "runs" / "rrdtui.db").exists() or Store(tmp_path / "runs").list_runs() == []


def test_a_launch_with_another_number_of_processes_than_the_run_has_is_refused(tmp_path):
    from rrdtui.config import from_mapping

    cfg = from_mapping({"method": {"name": "none"}, **EQUIVALENCE, "train": {**EQUIVALENCE["train"], "nproc": 2}}, "t")
    store = Store(tmp_path / "runs")
    run_id = store.create_run(cfg.to_dict(), config_hash=cfg.fingerprint())
    worker = [sys.executable, "-m", "rrdtui.train.worker", "--runs", str(tmp_path / "runs"), run_id]
    subprocess.run(worker, capture_output=True, timeout=600)  # one process, where the run has two
    row = store.get_run(run_id)
    assert row["status"] == "failed" and "set up for 2 processes" in row["error"] and "\n" not in row["error"]


# -- faults: real groups killed, stopped and resumed ---------------------------------------------

EPOCHS, STEPS_PER_EPOCH, LOG_EVERY = 3, 20, 2


@pytest.fixture
def group_preset(tmp_path: Path) -> Path:
    return write_preset(
        tmp_path,
        "group",
        data={"name": "synthetic", "num_classes": 4, "train_size": 1280, "val_size": 64, "probe_size": 32},
        student={"arch": "resnet8"},
        method={"name": "none"},
        optim={"lr": 0.05, "milestones": [2]},
        train={"epochs": EPOCHS, "batch_size": 64, "device": "cpu", "log_every": LOG_EVERY, "nproc": 2},
    )


def mid_run(store: Store, run_id: str) -> dict | None:
    row = store.get_run(run_id)
    return row if row["status"] == "running" and 0 < row["step"] < EPOCHS * STEPS_PER_EPOCH - 2 * LOG_EVERY else None


def ended(store: Store, run_id: str) -> dict | None:
    row = store.get_run(run_id)
    return row if row["status"] not in ("queued", "running") else None


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def group_processes(rank0: int) -> tuple[int, dict[int, int]]:
    """torchrun's pid (rank 0's parent) and its workers' pids by RANK."""
    torchrun = parent(rank0)
    ranks = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if parent(int(entry.name)) == torchrun:
                    env = dict(v.split("=", 1) for v in (entry / "environ").read_text().split("\0") if "=" in v)
                    ranks[int(env["RANK"])] = int(entry.name)
            except (OSError, ValueError, KeyError):
                continue
    return torchrun, ranks


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie: ended
    except OSError:
        return True


def history_once(store: Store, run_id: str) -> None:
    assert [e for _, e, _ in store.series(run_id, "val/acc")] == [float(e) for e in range(1, EPOCHS + 1)]
    steps = [s for s, _, _ in store.series(run_id, "train/loss")]
    assert steps == list(range(LOG_EVERY, EPOCHS * STEPS_PER_EPOCH + 1, LOG_EVERY))
    dupes = store.db.execute(
        "SELECT name, step, COUNT(*) FROM metrics WHERE run_id = ? GROUP BY name, step HAVING COUNT(*) > 1", [run_id]
    ).fetchall()
    assert dupes == []


def test_kill_9_of_rank_1_crashes_the_run_leaves_no_process_and_resume_completes(tmp_path, group_preset):
    runs = tmp_path / "runs"
    run_id = cli("run", group_preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    store = Store(runs)
    row = wait_for(lambda: mid_run(store, run_id), what="the run to be mid-epoch")
    torchrun, ranks = group_processes(row["pid"])
    assert sorted(ranks) == [0, 1] and ranks[0] == row["pid"]  # rank 0 owns the run row
    os.kill(ranks[1], signal.SIGKILL)
    final = wait_for(lambda: ended(store, run_id), what="the run to end")
    assert final["status"] == "crashed", final
    wait_for(lambda: all(gone(p) for p in (torchrun, *ranks.values())), what="every process of the group to end")
    resumed = cli("resume", run_id, "--runs", runs)
    assert resumed.returncode == 0, resumed.stderr
    assert store.get_run(run_id)["status"] == "completed"
    history_once(store, run_id)


def test_stop_stops_every_rank_after_the_same_step_and_resume_completes(tmp_path, group_preset):
    runs = tmp_path / "runs"
    run_id = cli("run", group_preset, "--detach", "--runs", runs).stdout.strip().splitlines()[-1]
    store = Store(runs)
    row = wait_for(lambda: mid_run(store, run_id), what="the run to be mid-epoch")
    torchrun, ranks = group_processes(row["pid"])
    assert cli("stop", run_id, "--runs", runs).returncode == 0
    final = wait_for(lambda: ended(store, run_id), what="the run to end")
    assert final["status"] == "stopped", final
    wait_for(lambda: all(gone(p) for p in (torchrun, *ranks.values())), what="every process of the group to end")
    checkpoint = torch.load(runs / run_id / "last.pt", weights_only=True)
    # The ranks agree at a metrics row: all stopped after that step (a rank that went on alone would
    # have hung its group, and torchrun would have killed it: a failure in the log).
    assert checkpoint["step"] == final["step"] and final["step"] % LOG_EVERY == 0
    assert "FAILED" not in (runs / run_id / "train.log").read_text()
    assert cli("resume", run_id, "--runs", runs).returncode == 0
    assert store.get_run(run_id)["status"] == "completed"
    history_once(store, run_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine_train_one_run_and_one_of_them_writes(tmp_path, group_preset):
    runs = tmp_path / "runs"
    endpoint = f"127.0.0.1:{free_port()}"
    launched = cli(
        "run", group_preset, "--detach", "--runs", runs, "--set", "train.nproc=1", "--set", "train.nnodes=2",
        "--set", f"train.rdzv_endpoint={endpoint}",
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    # The command the launch prints for the other nodes, run as printed, in a folder of its own.
    (note,) = [line for line in launched.stderr.splitlines() if "start each other node with:" in line]
    command = shlex.split(note.split("with: ", 1)[1])
    assert command[0] == "python" and command[-1] == "--join"
    other = tmp_path / "other_node"
    other.mkdir()
    joined = subprocess.run([sys.executable, *command[1:]], cwd=other, capture_output=True, text=True, timeout=600)
    assert joined.returncode == 0, joined.stderr[-3000:]
    store = Store(runs)
    final = wait_for(lambda: ended(store, run_id), what="the run to end")
    assert final["status"] == "completed", final
    assert '"world_size": 2' in final["env"]
    assert list(other.iterdir()) == []  # the joined node wrote nothing: rank 0 holds the store
    assert [r["id"] for r in store.list_runs()] == [run_id]
    history_once(store, run_id)
    assert "2 processes (2 nodes x 1), global batch 64 (32 each)" in cli("show", run_id, "--runs", runs).stdout
