"""The trainer process: `python -m rrdtui.train.worker --runs DIR [--resume] RUN_ID [RUN_ID ...]`.

Trains the given runs in order (a teacher first, then the student that needs it), each reading its
resolved configuration from the store and writing everything back there. The CLI and the dashboard
start this as a process, never import it: it is the only place torch is loaded.

SIGTERM and SIGINT ask for a clean stop (finish the step, write a checkpoint, end as `stopped`);
SIGHUP is ignored, so losing the terminal that launched a run does not end it.

Several processes (train.nproc, train.nnodes): torchrun starts this module once per process
(rrdtui.launcher builds the command). Rank 0 does all of the above and is the only one to touch the
store; for each run it starts, it announces the run's configuration to the other ranks, which train
it beside it (`follow`) and write nothing. Processes of other nodes join with `--join` and need no
store. Any rank that dies ends the group (torchrun stops the others): rank 0 records the run as
crashed when its collectives break, and the kernel's lock release says the same if rank 0 died.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import traceback
from pathlib import Path

from rrdtui.config import ConfigError, from_mapping
from rrdtui.store import TEACHER_FILE, RunReporter, Store, StoreError

log = logging.getLogger("rrdtui.train")
_stop = threading.Event()


def _request_stop(signum, frame) -> None:
    if not _stop.is_set():
        log.info("signal %d received: stopping after this step", signum)
    _stop.set()


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


# How often a student waiting for its teacher (trained by another process) looks at the store.
TEACHER_POLL_S = 2.0


def teacher_checkpoint(store: Store, row: dict, cfg) -> str | None:
    """The file the student's teacher loads from: a given checkpoint, or the teacher run's weights,
    linked into the student's folder the first time (a hard link where the file system allows)."""
    if cfg.teacher.checkpoint:
        return cfg.teacher.checkpoint
    if not row.get("teacher_run"):
        return None
    own = store.run_dir(row["id"]) / TEACHER_FILE
    if own.is_file():
        return str(own)
    teacher = store.get_run(row["teacher_run"])
    if teacher is None:
        raise TeacherGone(
            f"teacher run {row['teacher_run']} was removed before this run kept a copy of its weights: "
            "train a new one (rrdtui run the student's preset again)"
        )
    if teacher["status"] != "completed":
        raise TeacherGone(f"teacher run {teacher['id']} ended as {teacher['status']}, not completed")
    source = store.run_dir(teacher["id"]) / "last.pt"
    partial = own.with_suffix(".tmp")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copyfile(source, partial)
    os.replace(partial, own)
    return str(own)


class TeacherGone(Exception):
    """The student's teacher run is not (or no longer) there to distil from: one line."""


def wait_for_teacher(store: Store, run_id: str) -> str | None:
    """Wait while the run's teacher is being trained by another trainer (a seed loop, a study).

    Returns None when the teacher completed (or the run needs none), or the status the run was left
    in: stopped (a stop while it waited) or failed (the teacher did not complete).
    """
    announced = False
    while True:
        row = store.get_run(run_id)
        if row is None or row["status"] != "queued":
            return row["status"] if row else "failed"
        teacher = store.get_run(row["teacher_run"]) if row.get("teacher_run") else None
        if teacher is None or teacher["status"] == "completed":
            return None  # a missing teacher is reported by teacher_checkpoint, with the fix
        if teacher["status"] not in ("queued", "running"):
            reason = f"not started: teacher run {teacher['id']} ended as {teacher['status']}"
            store.cancel_queued(run_id, status="failed", error=reason)
            store.event(run_id, "error", reason)
            return "failed"
        if _stop.is_set():
            store.cancel_queued(run_id)
            return "stopped"
        if not announced:
            message = f"waiting for teacher run {teacher['id']} ({teacher['status']}) to complete"
            log.info(message)
            store.event(run_id, "info", message)
            announced = True
        _stop.wait(TEACHER_POLL_S)


def run_one(store: Store, run_id: str, resume: bool, group=None) -> tuple[str, bool]:
    """Train one run to its end; return its final status. Every failure is recorded in the store.

    With several processes (group), also whether the other ranks are back waiting for the next run:
    true unless they were given this one and it ended in a way they may not share (a failure here).
    """
    # Torch is imported here, not at module level, so `--help` and errors stay fast.
    from rrdtui.train.checkpoint import CheckpointError
    from rrdtui.train.data import DataError
    from rrdtui.train.distributed import SharedFailure
    from rrdtui.train.loop import Diverged, TrainError, train

    row = store.get_run(run_id)
    if row is None:
        print(f"rrdtui worker: no run {run_id} in {store.path}", file=sys.stderr)
        return "failed", True
    run_dir = store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    if row["status"] == "queued" and row.get("teacher_run"):
        left_as = wait_for_teacher(store, run_id)
        if left_as is not None:
            return left_as, True
    reporter = RunReporter(store, run_id)
    try:
        started = reporter.start()  # takes the run's lock, then queued -> running
    except StoreError as exc:  # another trainer owns it: leave the run and its row alone
        print(f"rrdtui worker: {exc}", file=sys.stderr)
        return "owned", True
    if not started:  # stopped while it waited for its turn (or for this process to start)
        return store.get_run(run_id)["status"], True
    handler = _log_to(run_dir / "train.log")
    store.event(run_id, "info", "resumed" if resume else "started")
    status, error, announced, shared = "failed", None, False, False
    try:
        cfg = from_mapping(json.loads(row["config"]), f"run {run_id}")
        world = group.world if group is not None else 1
        if cfg.train.world_size != world:
            raise TrainError(
                f"run {run_id} is set up for {cfg.train.world_size} processes (train.nproc {cfg.train.nproc} x "
                f"train.nnodes {cfg.train.nnodes}) but {world} started: launch it with that shape "
                "(as rrdtui run and rrdtui resume do)"
            )
        teacher_path = teacher_checkpoint(store, row, cfg)
        if group is not None:
            # The other ranks train it too, from what rank 0 sends (their node may not see the store).
            job = {"run_id": run_id, "config": row["config"], "teacher_path": teacher_path, "resume": resume}
            group.share(lambda: job)
            announced = True
        outcome = train(
            cfg,
            run_dir,
            reporter,
            teacher_path=teacher_path,
            resume=resume,
            stop_flag=_stop.is_set,
            **({"group": group} if group is not None else {}),
        )
        status = outcome.status
        if status == "completed":
            log.info("completed: val/acc %.2f (best %.2f)", outcome.final["val_acc"], outcome.final["best_acc"])
    except Diverged as exc:
        status, error = "diverged", f"diverged: {exc}"
        log.error(error)
    except (TrainError, DataError, CheckpointError, ConfigError, TeacherGone, SharedFailure) as exc:
        status, error = "failed", str(exc)
        log.error(error)
        shared = isinstance(exc, SharedFailure)
    except Exception as exc:
        if group is not None and _group_broke(exc):  # another rank is gone: torchrun ends the group
            status = "crashed"
            error = "another process of the run ended (killed, out of memory, or its error above in train.log)"
            log.error("%s: %s", error, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        else:  # anything else is a bug or an environment fault: keep the traceback
            status, error = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.error("failed with an exception:\n%s", traceback.format_exc())
    finally:
        try:
            reporter.finish(status, error=error)
        except Exception:  # the store itself failing (full disk): leave the row for liveness to judge
            log.error("could not record the run's end:\n%s", traceback.format_exc())
        store.event(run_id, "error" if error else "info", error or f"ended {status}")
        log.removeHandler(handler)
        handler.close()
    return status, not announced or shared or status in ("completed", "stopped", "diverged")


def _group_broke(exc: Exception) -> bool:
    from rrdtui.train.distributed import broken

    return broken(exc)


def follow(group) -> int:
    """A rank other than 0: train every run rank 0 announces, beside it, until it announces none.

    It reports nothing (rank 0 writes the run's rows and files). An error that every rank meets the
    same way (a divergence, rank 0 failing to read what it shares) leaves this rank waiting for the
    next announcement, as rank 0 records it; any other error ends this process, and torchrun the group.
    """
    from rrdtui.train.distributed import SharedFailure
    from rrdtui.train.loop import Diverged, Reporter, train

    log.setLevel(logging.ERROR)  # rank 0 keeps the log
    while (job := group.share(None)) is not None:
        cfg = from_mapping(json.loads(job["config"]), f"run {job['run_id']}")
        try:
            train(
                cfg,
                Path("."),  # never written: rank 0 owns the run's folder
                Reporter(),
                teacher_path=job["teacher_path"],
                resume=job["resume"],
                stop_flag=_stop.is_set,
                group=group,
            )
        except (Diverged, SharedFailure):
            continue
    return 0


def _process_group(join: bool):
    """The process group when torchrun started several processes, else None (one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        if join:
            raise SystemExit("rrdtui worker: --join is for a process that torchrun starts beside others")
        return None
    from rrdtui.train.distributed import ProcessGroup

    return ProcessGroup(owner=not join)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrdtui.train.worker")
    parser.add_argument("--runs", help="the runs folder holding rrdtui.db")
    parser.add_argument("--resume", action="store_true", help="continue from each run's last checkpoint")
    parser.add_argument(
        "--join", action="store_true", help="another node's processes of a run started elsewhere (no store here)"
    )
    parser.add_argument("run_ids", nargs="*")
    args = parser.parse_args(argv)
    if not args.join and not (args.runs and args.run_ids):
        parser.error("give --runs DIR and the run ids (or --join on another node)")

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    group = _process_group(args.join)
    if group is not None and group.rank != 0:
        return follow(group)
    store = Store(args.runs)
    statuses = []
    others_waiting = True
    for position, run_id in enumerate(args.run_ids):
        status, others_waiting = run_one(store, run_id, args.resume, group)
        statuses.append(status)
        if status == "owned":
            break  # another trainer has this run (and so its students): nothing here is ours to mark
        if status != "completed":
            # The runs after this one (students of this teacher) cannot start: say why in each.
            for later in args.run_ids[position + 1 :]:
                if store.get_run(later)["status"] != "queued":
                    continue  # stopped by the user meanwhile: its own reason stands
                reason = f"not started: run {run_id} before it ended as {status}"
                store.update_run(later, status="stopped" if status == "stopped" else "failed", error=reason)
                store.event(later, "error", reason)
            break
    store.close()
    if group is not None:
        if not others_waiting:  # they may be anywhere in the run that failed: torchrun ends them
            return 1
        group.share(lambda: None)  # nothing more to train: every rank exits, and exits 0 (the store
        return 0  # says how the runs ended; a failure code would make torchrun kill the others)
    return 0 if all(s == "completed" for s in statuses) and len(statuses) == len(args.run_ids) else 1


if __name__ == "__main__":
    sys.exit(main())
