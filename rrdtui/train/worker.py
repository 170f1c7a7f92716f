"""The trainer process: `python -m rrdtui.train.worker --runs DIR [--resume] RUN_ID [RUN_ID ...]`.

Trains the given runs in order (a teacher first, then the student that needs it), each reading its
resolved configuration from the store and writing everything back there. The CLI and the dashboard
start this as a process, never import it: it is the only place torch is loaded.

SIGTERM and SIGINT ask for a clean stop (finish the step, write a checkpoint, end as `stopped`);
SIGHUP is ignored, so losing the terminal that launched a run does not end it.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import traceback
from pathlib import Path

from rrdtui.config import ConfigError, from_mapping
from rrdtui.store import RunReporter, Store, StoreError

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


def teacher_checkpoint(store: Store, row: dict, cfg) -> str | None:
    """The file the student's teacher loads from: a given checkpoint, or a teacher run's last.pt."""
    if cfg.teacher.checkpoint:
        return cfg.teacher.checkpoint
    if row.get("teacher_run"):
        teacher = store.get_run(row["teacher_run"])
        if teacher is None:
            raise RuntimeError(f"teacher run {row['teacher_run']} is not in the store")
        if teacher["status"] != "completed":
            raise RuntimeError(f"teacher run {teacher['id']} ended as {teacher['status']}, not completed")
        return str(store.run_dir(teacher["id"]) / "last.pt")
    return None


def run_one(store: Store, run_id: str, resume: bool) -> str:
    """Train one run to its end; return its final status. Every failure is recorded in the store."""
    # Torch is imported here, not at module level, so `--help` and errors stay fast.
    from rrdtui.train.checkpoint import CheckpointError
    from rrdtui.train.data import DataError
    from rrdtui.train.loop import Diverged, TrainError, train

    row = store.get_run(run_id)
    if row is None:
        print(f"rrdtui worker: no run {run_id} in {store.path}", file=sys.stderr)
        return "failed"
    run_dir = store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    reporter = RunReporter(store, run_id)
    try:
        started = reporter.start()  # takes the run's lock, then queued -> running
    except StoreError as exc:  # another trainer owns it: leave the run and its row alone
        print(f"rrdtui worker: {exc}", file=sys.stderr)
        return "owned"
    if not started:  # stopped while it waited for its turn (or for this process to start)
        return store.get_run(run_id)["status"]
    handler = _log_to(run_dir / "train.log")
    store.event(run_id, "info", "resumed" if resume else "started")
    status, error = "failed", None
    try:
        cfg = from_mapping(json.loads(row["config"]), f"run {run_id}")
        outcome = train(
            cfg,
            run_dir,
            reporter,
            teacher_path=teacher_checkpoint(store, row, cfg),
            resume=resume,
            stop_flag=_stop.is_set,
        )
        status = outcome.status
        if status == "completed":
            log.info("completed: val/acc %.2f (best %.2f)", outcome.final["val_acc"], outcome.final["best_acc"])
    except Diverged as exc:
        status, error = "diverged", f"diverged: {exc}"
        log.error(error)
    except (TrainError, DataError, CheckpointError, ConfigError) as exc:
        status, error = "failed", str(exc)
        log.error(error)
    except Exception as exc:  # anything else is a bug or an environment fault: keep the traceback
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
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrdtui.train.worker")
    parser.add_argument("--runs", required=True, help="the runs folder holding rrdtui.db")
    parser.add_argument("--resume", action="store_true", help="continue from each run's last checkpoint")
    parser.add_argument("run_ids", nargs="+")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    store = Store(args.runs)
    statuses = []
    for position, run_id in enumerate(args.run_ids):
        status = run_one(store, run_id, args.resume)
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
    return 0 if all(s == "completed" for s in statuses) and len(statuses) == len(args.run_ids) else 1


if __name__ == "__main__":
    sys.exit(main())
