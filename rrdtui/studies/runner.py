"""The study runner: one process per study that keeps its slots busy until every run has ended.

`rrdtui study FILE` records the study and its runs (`prepare`), then runs this loop in the
foreground or as a detached process (`python -m rrdtui.studies.runner --runs DIR NAME`), which
survives logout like a detached run. The runner trains nothing itself and imports no torch: it
starts one trainer process per run (rrdtui.train.worker), at most `slots` at a time, each on a
device of `devices` with at most `per_device` runs packed on one GPU (its CUDA_VISIBLE_DEVICES).
A student starts once its teacher run has completed; a teacher shared by several students is one
run, trained once, first.

Ownership follows the runs' rule: the study's queued runs belong to the runner's pid (alive while it
lives), each started run to its trainer (its lock). The runner holds the study's own lock
(`runs/studies/<name>/lock`), so one study has at most one runner, and a dead runner is seen at once.
Killed, it leaves its trainers running; the next `rrdtui study FILE` adopts them (they count against
the slots) and continues: completed runs are kept, crashed or stopped ones resumed, missing ones
started. `rrdtui stop STUDY` sets the study's stop flag and stops its runs; the runner then starts
nothing more and ends when its trainers have.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rrdtui.launcher import create_runs, plan_runs, request_stop, spawn_worker
from rrdtui.ownership import ACTIVE, RESUMABLE, RunLock
from rrdtui.store import HOST, Store, StoreError
from rrdtui.studies.spec import Study, point_label

# How often the runner looks at its trainers and the store. A study's runs take minutes to days;
# half a second of latency in starting the next one is nothing.
POLL_S = 0.5
TEACHER_ROLE = json.dumps({"role": "teacher"})


@dataclass
class Placement:
    """Where runs go: `devices` are CUDA indices ([] for the CPU), `per_device` runs at most on each."""

    slots: int
    devices: list[str]
    per_device: int

    def env(self, device: str | None) -> dict[str, str]:
        if device is not None:
            return {"CUDA_VISIBLE_DEVICES": device}
        if "OMP_NUM_THREADS" in os.environ or self.slots <= 1:
            return {}
        # Several CPU trainers at once: share the cores instead of each taking all of them.
        return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // self.slots))}

    def pick(self, busy: dict[str, int]) -> str | None:
        """The device with the fewest runs that still has room (None on the CPU)."""
        if not self.devices:
            return None
        free = [d for d in self.devices if busy.get(d, 0) < self.per_device]
        return min(free, key=lambda d: (busy.get(d, 0), self.devices.index(d))) if free else ""


def placement(slots: int | None, devices: str | None, per_device: int) -> Placement:
    """Validate --slots, --devices, --per-device (StoreError with one line)."""
    if per_device < 1:
        raise StoreError(f"--per-device must be at least 1, got {per_device}")
    names = [d.strip() for d in (devices or "").split(",") if d.strip()]
    for d in names:
        if not d.isdigit():
            raise StoreError(f"--devices: '{d}' is not a CUDA device index (give them as 0,1,2)")
    if len(set(names)) != len(names):
        raise StoreError("--devices lists a device twice")
    room = len(names) * per_device if names else None
    if slots is None:
        slots = room or 1
    if slots < 1:
        raise StoreError(f"--slots must be at least 1, got {slots}")
    if room is not None and slots > room:
        raise StoreError(f"--slots {slots} is more than {len(names)} device(s) x --per-device {per_device} hold")
    return Placement(slots, names, per_device)


# ---------------------------------------------------------------------------------------------
# Recording a study and its runs
# ---------------------------------------------------------------------------------------------


def prepare(store: Store, study: Study) -> tuple[list[str], list[str]]:
    """Record the study and bring its runs into line with its points; return (new, resumed) ids.

    A point whose run completed (or diverged: a finding, not a fault) is kept; a stopped, crashed or
    failed one is claimed for resumption; a missing one is created (its teacher trained first when the
    store has none, once for all the students that share it). A run whose point now resolves to
    another configuration (the file or --set changed) leaves the study. Everything is checked before
    the first row is written.
    """
    runner = store.get_study(study.name)
    if runner is not None and store.study_runner_alive(runner):
        raise StoreError(
            f"study {study.name} is already running (runner pid {runner['pid']}): watch it with "
            f"`rrdtui table {study.name}`, stop it with `rrdtui stop {study.name}`"
        )
    existing = {row["study_point"]: row for row in store.study_runs(study.name)}
    # Planning resolves each point's teacher (its architecture joins the configuration) first.
    planned = {p.key(): plan_runs(p.config, p.preset, store) for p in study.points}
    missing, plans, resume = [], [], []
    for point in study.points:
        row = existing.get(point.key())
        if row is not None and row["config_hash"] != point.config.fingerprint():
            row = None  # the point now means another configuration: a new run replaces it
        if row is None:
            missing.append(point)
            plans.append(planned[point.key()])
        elif row["status"] in RESUMABLE:
            resume.append(row["id"])

    from rrdtui.preflight import preflight
    from rrdtui.launcher import Plan

    # One check per distinct configuration apart from the seed (a grid x 3 seeds checks each point once).
    seen, representatives = set(), Plan()
    for plan in plans:
        for planned in plan.runs:
            key = json.dumps({**planned.config.to_dict(), "seed": None}, sort_keys=True)
            if key not in seen:
                seen.add(key)
                representatives.runs.append(planned)
    preflight(representatives)

    store.save_study(study.name, study.file, study.spec())
    store.update_study(study.name, stop_requested=0, ended=None)
    current = {p.key() for p in study.points}
    for key, row in existing.items():
        if key != TEACHER_ROLE and (key not in current or row["config_hash"] != _point_hash(study, key)):
            store.update_run(row["id"], study=None, study_point=None)
            store.event(row["id"], "info", f"left study {study.name}: its point now names another configuration")

    created: list[str] = []
    teachers: dict[str, str] = {}  # fingerprint -> the teacher run this study trains for its students
    for point, plan in zip(missing, plans):
        for planned in plan.runs[:-1]:  # teachers to train first: once for the whole study
            fp = planned.config.fingerprint()
            if fp not in teachers:
                (teachers[fp],) = create_runs(_single(planned), store)
                store.update_run(teachers[fp], study=study.name, study_point=TEACHER_ROLE)
                created.append(teachers[fp])
        student = plan.runs[-1]
        if student.teacher_index is not None:
            student.teacher_run = teachers[plan.runs[student.teacher_index].config.fingerprint()]
            student.teacher_index = None
        (run_id,) = create_runs(_single(student), store)
        store.update_run(run_id, study=study.name, study_point=point.key())
        created.append(run_id)
    if resume:
        store.claim(resume, action="resume with the study")
    return created, resume


def _point_hash(study: Study, key: str) -> str | None:
    for point in study.points:
        if point.key() == key:
            return point.config.fingerprint()
    return None


def _single(planned):
    from rrdtui.launcher import Plan

    return Plan(runs=[planned])


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------


class Runner:
    """Keeps up to `slots` trainers going for one study until none is left to start."""

    def __init__(self, store: Store, name: str, place: Placement, say: Callable[[str], None] = print):
        self.store = store
        self.name = name
        self.place = place
        self.say = say
        self.children: dict[str, tuple[subprocess.Popen, str | None]] = {}  # run id -> (trainer, device)
        self.stop = threading.Event()
        self.stopping = False

    def run(self) -> int:
        """Run the study to its end; 0 when every run completed, 1 otherwise."""
        lock = RunLock(self.store.study_dir(self.name))
        if not lock.acquire():
            raise StoreError(f"study {self.name} already has a runner (pid {lock.holder() or '?'})")
        try:
            self.store.update_study(
                self.name, pid=os.getpid(), host=HOST, started=time.time(), ended=None,
                slots=self.place.slots, devices=",".join(self.place.devices), per_device=self.place.per_device,
            )  # fmt: skip
            self._adopt()
            while self._step():
                self.stop.wait(POLL_S)
        finally:
            self.store.update_study(self.name, ended=time.time())
            lock.release()
        rows = self.store.study_runs(self.name)
        counts = _counts(rows)
        self.say(f"study {self.name} ended: " + _progress(counts))
        return 0 if counts.get("completed", 0) == len(rows) else 1

    def _adopt(self) -> None:
        """Queued runs of the study that belong to this process's parent (the CLI that prepared them)
        or to no live process become this runner's."""
        ids = [r["id"] for r in self.store.study_runs(self.name) if r["status"] == "queued"]
        self.store.hand_over(ids, os.getpid())

    def _step(self) -> bool:
        """Reap, start what may start; False when nothing is left running or to start."""
        for run_id, (proc, _) in list(self.children.items()):
            if proc.poll() is not None:
                del self.children[run_id]
                row = self.store.get_run(run_id)
                self.say(f"{run_id} ended {row['status'] if row else '?'}" + _accuracy(row) + self._tally())
        study = self.store.get_study(self.name) or {}
        if study.get("stop_requested") and not self.stop.is_set():
            self.stop.set()
        rows = self.store.study_runs(self.name)
        if self.stop.is_set():
            if not self.stopping:  # once: a stop (signal or `rrdtui stop`) reaches every trainer
                self.stopping = True
                self.say(f"stopping study {self.name}: no new run starts, running ones stop cleanly")
                for row in rows:
                    if row["status"] in ACTIVE and row["id"] in self.children:
                        try:
                            request_stop(self.store, row["id"])
                        except StoreError:
                            pass  # it ended meanwhile
            for row in rows:
                if row["status"] == "queued" and row["id"] not in self.children and row.get("pid") == os.getpid():
                    self.store.cancel_queued(row["id"])
            return bool(self.children)
        by_id = {r["id"]: r for r in rows}
        # Trainers of this study that another process started (a runner killed before) hold slots too.
        foreign = [r for r in rows if r["status"] in ACTIVE and r["id"] not in self.children and r.get("pid") != os.getpid()]
        waiting = [r for r in rows if r["status"] == "queued" and r["id"] not in self.children and r.get("pid") == os.getpid()]
        waiting.sort(key=lambda r: (r.get("study_point") != TEACHER_ROLE, r["created"]))
        for row in waiting:
            if len(self.children) + len(foreign) >= self.place.slots:
                break
            teacher = by_id.get(row.get("teacher_run") or "") or (
                self.store.get_run(row["teacher_run"]) if row.get("teacher_run") else None
            )
            if teacher is not None and teacher["status"] != "completed":
                if teacher["status"] in ACTIVE:
                    continue  # its teacher is still training: later
                reason = f"not started: teacher run {teacher['id']} ended as {teacher['status']}"
                if self.store.cancel_queued(row["id"], status="failed", error=reason):
                    self.store.event(row["id"], "error", reason)
                    self.say(f"{row['id']} {reason}")
                continue
            busy: dict[str, int] = {}
            for _, device in self.children.values():
                if device is not None:
                    busy[device] = busy.get(device, 0) + 1
            device = self.place.pick(busy)
            if device == "":
                break  # every device is full
            proc = spawn_worker(
                self.store, [row["id"]], detach=False, resume=row.get("started") is not None,
                env=self.place.env(device),
            )  # fmt: skip
            self.children[row["id"]] = (proc, device)
            where = f" on cuda:{device}" if device is not None else ""
            self.say(f"{row['id']} started {_point_label(row)}{where}" + self._tally())
        # The rows read above still say what is left: a run started just now was queued in them.
        return bool(self.children or any(r["status"] in ACTIVE for r in rows))

    def _tally(self) -> str:
        return " [" + _progress(_counts(self.store.study_runs(self.name))) + "]"


def _counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def _progress(counts: dict[str, int]) -> str:
    order = ("completed", "running", "queued", "stopped", "failed", "crashed", "diverged")
    total = sum(counts.values())
    parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
    return f"{total} runs: " + ", ".join(parts) if parts else "no runs"


def _accuracy(row: dict | None) -> str:
    """What a finished run's line adds: its accuracy, or why it did not complete."""
    if row and row.get("best_acc") is not None and row["status"] == "completed":
        return f" ({row['best_acc']:.2f}% best val/acc)"
    if row and row.get("error"):
        return f": {row['error'].splitlines()[0]}"
    return ""


def _point_label(row: dict) -> str:
    point = json.loads(row.get("study_point") or "{}")
    if point.get("role") == "teacher":
        return f"teacher {row['name']}"
    return point_label(point, Path(point.get("preset", row["name"])).stem)


def stop_study(store: Store, name: str) -> list[str]:
    """Stop a study: no new run starts, queued ones are cancelled, running ones stop cleanly."""
    study = store.get_study(name)
    if study is None:
        raise StoreError(f"no study '{name}' in {store.path} (see `rrdtui studies`)")
    store.update_study(name, stop_requested=1)
    stopped = []
    for row in store.study_runs(name):
        if row["status"] in ACTIVE:
            try:
                stopped.append(request_stop(store, row["id"]))
            except StoreError:
                pass  # it ended meanwhile
    if study.get("pid") and (study.get("host") or HOST) == HOST and store.study_runner_alive(study):
        try:
            os.kill(study["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    return stopped


def spawn_runner(store: Store, name: str, place: Placement) -> subprocess.Popen:
    """Start the study's runner as a detached process (its own session: logout does not end it)."""
    folder = store.study_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "rrdtui.studies.runner", "--runs", str(store.runs_dir.resolve()),
        "--slots", str(place.slots), "--devices", ",".join(place.devices), "--per-device", str(place.per_device),
        name,
    ]  # fmt: skip
    with open(folder / "runner.log", "ab") as log_file:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    # The study's queued runs are the runner's from now on (it also adopts them when it starts).
    store.hand_over([r["id"] for r in store.study_runs(name) if r["status"] == "queued"], proc.pid)
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrdtui.studies.runner")
    parser.add_argument("--runs", required=True)
    parser.add_argument("--slots", type=int, default=None)
    parser.add_argument("--devices", default="")
    parser.add_argument("--per-device", type=int, default=1)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    store = Store(args.runs)
    runner = Runner(store, args.name, placement(args.slots, args.devices, args.per_device), say=_say)
    install_signals(runner)
    try:
        return runner.run()
    except StoreError as exc:
        _say(f"error: {exc}")
        return 2
    finally:
        store.close()


def install_signals(runner: Runner) -> None:
    """SIGTERM and SIGINT stop the study (its trainers get their own signal or the stop flag);
    SIGHUP is ignored, so losing the terminal does not end a foreground study's runner."""

    def stop(signum, frame) -> None:
        runner.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _say(message: str) -> None:
    print(time.strftime("%Y-%m-%d %H:%M:%S ") + message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
