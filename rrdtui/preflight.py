"""What is checked before any run row is written: each planned run's data, and a teacher checkpoint.

A missing data set or a teacher file that cannot serve (unreadable, unsafe, another architecture,
another class count) is one line in the terminal or the launch form now, instead of a run that
fails in its trainer minutes later. No torch here: the teacher file is read by a short process,
`python -m rrdtui.train.teacher`, with the very code training loads it with.
"""

from __future__ import annotations

import subprocess
import sys

from rrdtui.config import Config, ConfigError
from rrdtui.datacheck import check_data, data_shape

# Importing torch and reading a large teacher takes seconds; a hung check must not hang the CLI.
TEACHER_CHECK_TIMEOUT_S = 300.0


def check_teacher_checkpoint(cfg: Config) -> None:
    """Raise ConfigError (one line) when cfg's teacher.checkpoint would not load for its data set."""
    num_classes, channels = data_shape(cfg)
    cmd = [
        sys.executable, "-m", "rrdtui.train.teacher",
        str(cfg.teacher.arch), str(cfg.teacher.checkpoint),
        "-" if num_classes is None else str(num_classes), str(channels),
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=TEACHER_CHECK_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"checking teacher.checkpoint {cfg.teacher.checkpoint} took over {TEACHER_CHECK_TIMEOUT_S:.0f} s: "
            "is the file on a slow or hung mount?"
        ) from None
    if proc.returncode == 0:
        return
    lines = [line for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
    if proc.returncode == 2 and lines:
        raise ConfigError(lines[-1].strip())
    last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
    raise ConfigError(f"the check of teacher.checkpoint {cfg.teacher.checkpoint} failed: {last}")


def preflight(plan) -> None:
    """Check every run of a launcher Plan before it is created; raise ConfigError with one line."""
    for planned in plan.runs:
        check_data(planned.config)
    for planned in plan.runs:
        cfg = planned.config
        if cfg.distills and cfg.teacher.checkpoint:
            check_teacher_checkpoint(cfg)
