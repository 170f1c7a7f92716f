"""Can this machine train on a configuration's train.device? Checked before any run row is written.

`python -m rrdtui.train.devicecheck DEVICE` exits 0, or prints one line naming train.device and the fix
on stderr and exits 2. The CLI and the dashboard run it as a process (they never import torch), and
only for a device that names hardware (cuda, cuda:N, mps): `auto` and `cpu` always work.
"""

from __future__ import annotations

import sys

import torch


def device_problem(name: str) -> str | None:
    """Why train.device `name` cannot be used here, in one line; None when it can."""
    fix = "use --set train.device=cpu (or auto, which picks CUDA when there is one)"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"train.device is '{name}' but this machine has no usable CUDA device: {fix}"
        count = torch.cuda.device_count()
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            return f"train.device is '{name}' but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1}): choose one of them"
    if name == "mps" and not torch.backends.mps.is_available():
        return f"train.device is 'mps' but this machine has no Apple GPU: {fix}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rrdtui.train.devicecheck DEVICE", file=sys.stderr)
        return 2
    problem = device_problem(args[0])
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
