"""Checkpoints: written to a temporary file and renamed, read with weights_only=True.

Our checkpoints and the published RepDistiller/mdistiller/RRD teacher files share the key "model"
(a state dict), so one loader serves both. What each format holds:

- ours: {"model": state_dict, ...} (last.pt adds what resuming needs; best.pt the best weights);
- RepDistiller: {"model": state_dict, "epoch", "optimizer", ...}; its `*_last.pth` adds "opt", the
  script's argparse.Namespace, the one class beyond plain data we allow through the unpickler;
- mdistiller: `student_*` files hold {"model": student_state_dict}; `best`, `latest` and `epoch_N`
  hold the whole distiller as DataParallel saved it, {"model": {"module.student.*", "module.teacher.*",
  "module.<connector>.*"}, ...}: the student's sub-dictionary is the network it trained.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import pickletools
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("rrdtui.train")

# The only class beyond plain data a checkpoint may ask for: RepDistiller's `opt` (its arguments).
ALLOWED_CLASSES = [argparse.Namespace]

# What torch says when a write it made failed (the disk filled up under it).
_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "iostream error", "file write failed")


class CheckpointError(Exception):
    """A checkpoint that cannot be used: one line naming the file and the problem."""


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _WRITE_FAILURES)


def disk_full_error(path: Path) -> CheckpointError:
    """The one line for a checkpoint the disk had no room for."""
    folder = path.parent
    try:
        free = _size(shutil.disk_usage(folder).free)
    except OSError:
        free = "unknown space"
    return CheckpointError(
        f"disk full: cannot write {path} ({free} free): free space on {_mount_point(folder)} and resume"
    )


def save_atomic(obj: dict[str, Any], path: Path, tmp_suffix: str = ".tmp") -> None:
    """Write obj to path so that a crash or a full disk never leaves a half-written file behind.

    A write the disk has no room for (ENOSPC or EDQUOT, or torch's own report of a short write)
    raises CheckpointError saying so; the earlier file at path is left as it was. Writers that may
    race for the same path (not a run's own files: one trainer owns those) pass a tmp_suffix of
    their own.
    """
    path = Path(path)
    tmp = path.with_name(path.name + tmp_suffix)
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _disk_full(exc):
            raise disk_full_error(path) from None
        raise


def _pickle_globals(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickle names ("module.name"), read without running it."""
    if zipfile.is_zipfile(path):
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    # The legacy format (and a bare pickle): a few pickles in a row; scan their opcodes.
    names: list[str] = []
    with open(path, "rb") as fh:
        for _ in range(8):
            strings: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(fh):
                    if op.name == "GLOBAL":
                        names.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except ValueError:  # the end of the file, or not a pickle: what was found so far counts
                break
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:
        allowed = set()
    return [n for n in dict.fromkeys(names) if n not in allowed and not n.startswith("torch.")]


def _legacy_truncated(path: Path) -> bool:
    """Whether a non-zip checkpoint's pickle stops before its end (a file cut short)."""
    with open(path, "rb") as fh:
        try:
            for _ in pickletools.genops(fh):
                pass
        except ValueError as exc:
            return "exhausted" in str(exc)
    return False


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """Say plainly why torch.load refused path: empty, cut short, unsafe, or not a checkpoint.

    Never torch's own advice: it suggests weights_only=False, which runs whatever the file holds.
    """
    size = path.stat().st_size
    if size == 0:
        return CheckpointError(f"checkpoint {path} is empty (0 bytes): its write never finished; use a complete copy")
    with open(path, "rb") as fh:
        is_zip_start = fh.read(4) == b"PK\x03\x04"
    if is_zip_start and not zipfile.is_zipfile(path):
        return CheckpointError(
            f"checkpoint {path} is truncated ({_size(size)}; its end is missing): it was not written "
            "completely; use a complete copy"
        )
    try:
        allowed = {f"{c.__module__}.{c.__qualname__}" for c in ALLOWED_CLASSES}
        unsafe = [n for n in _pickle_globals(path) if n not in allowed]
    except Exception:
        unsafe = []
    if unsafe:
        shown = ", ".join(unsafe[:5]) + (f" and {len(unsafe) - 5} more" if len(unsafe) > 5 else "")
        return CheckpointError(f"{path} is not a plain weights file: it asks to load {shown} (refused for safety)")
    if "unexpected EOF" in str(exc) or (not is_zip_start and _legacy_truncated(path)):
        return CheckpointError(
            f"checkpoint {path} is truncated ({_size(size)}; its end is missing): it was not written "
            "completely; use a complete copy"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "weights" in first.lower() or isinstance(exc, EOFError):
        first = "not a checkpoint torch.save wrote"
    return CheckpointError(f"checkpoint {path} cannot be read: {first}")


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with torch.serialization.safe_globals(ALLOWED_CLASSES):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # unpickling errors come in many types; all mean "not a usable file"
        raise _unreadable(path, exc) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def model_state(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict from our checkpoints, published {"model": ...} files or a bare state dict.

    A whole mdistiller distiller (keys student.*, teacher.*, after DataParallel's module.) gives its
    student's sub-dictionary: the network mdistiller trained; teacher.* alone gives the teacher's.
    """
    state = obj.get("model", obj)
    if not isinstance(state, dict):
        raise CheckpointError("checkpoint has no model state dict")
    # Files saved from nn.DataParallel carry a "module." prefix on every key.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    parts = {k.split(".", 1)[0] for k in state if isinstance(k, str)}
    for part in ("student", "teacher"):
        if part in parts:
            if part == "student" and "teacher" in parts:
                log.info(
                    "the checkpoint holds an mdistiller distiller (student.* and teacher.*): "
                    "loading student.*, the network it trained"
                )
            prefix = part + "."
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state
