"""Run ownership as an OS fact: the trainer that owns a run holds an flock on `runs/<id>/lock`.

The kernel drops the lock when the process ends, however it ends (kill -9 included), so on the host
that trains a run "the lock is held" is the whole answer to "is it alive?": a heartbeat can be late
(a suspended process, a sleeping laptop, a busy database), a lock cannot lie. Readers test the lock
with a shared, non-blocking attempt that they drop at once; the owner takes it exclusively and
retries for a moment, so a reader's brief test never looks like a second owner.

No torch, no UI and no database here (the dashboard imports it at start-up): the store, the launcher,
the trainer and the dashboard all use it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

# The states a run can be resumed from, and those in which it has (or is about to have) an owner.
RESUMABLE = ("stopped", "crashed", "failed")
ACTIVE = ("queued", "running")

LOCK_NAME = "lock"
# How long an owner keeps trying when the lock is busy: long enough to outlast any reader's test
# (microseconds, or a descheduled reader on a loaded machine), short enough to refuse a real owner.
ACQUIRE_PATIENCE_S = 5.0


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK_NAME


def lock_held(run_dir: Path) -> bool:
    """True when some process holds the run's lock (it is being trained on this host)."""
    try:
        fd = os.open(lock_path(run_dir), os.O_RDONLY)
    except OSError:
        return False  # no lock file: no trainer ever owned this folder
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class RunLock:
    """The exclusive lock of one run's folder, held by the trainer for as long as it owns the run."""

    def __init__(self, run_dir: Path):
        self.path = lock_path(run_dir)
        self._fd: int | None = None

    def acquire(self, patience: float = ACQUIRE_PATIENCE_S) -> bool:
        """Take the lock; False when another process keeps holding it (the run has another owner)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
        # The owner's pid in the file is for people (`cat runs/<id>/lock`); the lock is the fact.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def holder(self) -> int | None:
        """The pid the current owner wrote into the lock file, when it says one."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def held(self) -> bool:
        return self._fd is not None
