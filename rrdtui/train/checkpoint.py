"""Checkpoints: written to a temporary file and renamed, read with weights_only=True.

Our checkpoints and the published RepDistiller/mdistiller/RRD teacher files share the key "model"
(a state dict), so one loader serves both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class CheckpointError(Exception):
    """A checkpoint that cannot be used: one line naming the file and the problem."""


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write obj to path so that a crash or a full disk never leaves a half-written file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a usable file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read: {first}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def model_state(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict from our checkpoints, published {"model": ...} files or a bare state dict."""
    state = obj.get("model", obj)
    if not isinstance(state, dict):
        raise CheckpointError("checkpoint has no model state dict")
    # Files saved from nn.DataParallel carry a "module." prefix on every key.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state
