"""A teacher network from a checkpoint file: loaded, checked against its architecture, frozen.

Training loads its teacher here, and so does the check the CLI and the dashboard run before a run
row is written: `python -m rrdtui.train.teacher ARCH PATH NUM_CLASSES IN_CHANNELS` (NUM_CLASSES `-`
when the data set's count is not known before loading it) loads the file exactly as training will,
then exits 0, or prints one line on stderr and exits 2. They run it as a process because they never
import torch.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from rrdtui.train import checkpoint
from rrdtui.train.checkpoint import CheckpointError
from rrdtui.train.models import build_model


def _classifier_key(model: nn.Module) -> str | None:
    """The state-dict key of the final classifier's weight (the last Linear a model registers)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return f"{names[-1]}.weight" if names else None


def _mismatch(state: dict, expected: dict) -> str:
    """The first missing key, the first unexpected key and the first key of another shape."""
    parts = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    for keys, what in ((missing, "missing"), (unexpected, "unexpected")):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            parts.append(f"{what} {keys[0]}{more}")
    if reshaped:
        k = reshaped[0]
        more = f" ({len(reshaped) - 1} more of other shapes)" if len(reshaped) > 1 else ""
        parts.append(
            f"{k} is {list(state[k].shape)} in the file but {list(expected[k].shape)} in the architecture{more}"
        )
    return "; ".join(parts)


def load_teacher(arch: str, path: str, num_classes: int | None, in_channels: int) -> nn.Module:
    """Build the teacher, load its weights (ours or a published format) and freeze it.

    `num_classes` None: as many classes as the file's classifier has (nothing to compare it with).
    Raises CheckpointError with one line: unreadable or unsafe file, another class count, another
    architecture.
    """
    try:
        state = checkpoint.model_state(checkpoint.load(path))
    except CheckpointError as exc:
        raise CheckpointError(f"teacher: {exc}") from None
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"teacher {path} holds no model weights under 'model': is it a checkpoint of a network?")
    model = build_model(arch, num_classes or 2, in_channels=in_channels)
    head = _classifier_key(model)
    if num_classes is None and head in state and state[head].ndim == 2:
        model = build_model(arch, int(state[head].shape[0]), in_channels=in_channels)
    expected = model.state_dict()
    if num_classes is not None:
        for key, tensor in state.items():
            if key in expected and expected[key].shape != tensor.shape and tensor.ndim == 2 and key.endswith("weight"):
                if tensor.shape[1] == expected[key].shape[1]:
                    raise CheckpointError(
                        f"teacher {path} predicts {tensor.shape[0]} classes but the data set has {num_classes}: "
                        "use a teacher trained on this data set"
                    )
    problem = _mismatch(state, expected)
    if problem:
        raise CheckpointError(f"teacher {path} does not fit teacher.arch '{arch}' ({problem}): check teacher.arch")
    model.load_state_dict(state, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        print("usage: python -m rrdtui.train.teacher ARCH PATH NUM_CLASSES|- IN_CHANNELS", file=sys.stderr)
        return 2
    arch, path, classes, channels = args
    try:
        load_teacher(arch, path, None if classes == "-" else int(classes), int(channels))
    except CheckpointError as exc:
        print(str(exc).splitlines()[0] if str(exc) else "teacher checkpoint refused", file=sys.stderr)
        return 2
    except ValueError as exc:  # an unknown architecture name (the configuration checks it first)
        print(f"teacher.arch: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
