"""What is checked before any run row is written: each planned run's device, data, a teacher
checkpoint, and whether a method that reads stage maps can pair the student with the teacher.

A CUDA device the machine lacks, a missing data set or a teacher file that cannot serve (unreadable,
unsafe, another architecture, another class count) is one line in the terminal or the launch form
now, instead of a run that fails in its trainer minutes later. No torch here: what needs torch runs
as a short process (`python -m rrdtui.train.devicecheck`, `rrdtui.train.teacher`,
`rrdtui.train.pairing`) with the very code training uses.

`check_launch` is the whole check of a launch, for `rrdtui run` and the dashboard's launch form alike.
"""

from __future__ import annotations

import json
import subprocess
import sys

from rrdtui.config import Config, ConfigError
from rrdtui.datacheck import check_data, data_shape
from rrdtui.registry import method_info

# Importing torch and reading a large teacher takes seconds; a hung check must not hang the CLI.
CHECK_TIMEOUT_S = 300.0


def _run_check(cmd: list[str], what: str, stdin: str | None = None) -> None:
    """Run a check process: exit 0 passes; exit 2 with a line on stderr is that line, as ConfigError."""
    try:
        proc = subprocess.run(
            cmd, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=CHECK_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ConfigError(f"checking {what} took over {CHECK_TIMEOUT_S:.0f} s: is a file on a slow or hung mount?") from None
    if proc.returncode == 0:
        return
    lines = [line for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
    if proc.returncode == 2 and lines:
        raise ConfigError(lines[-1].strip())
    last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
    raise ConfigError(f"the check of {what} failed: {last}")


def check_device(device: str) -> None:
    """Raise ConfigError (one line) when this machine cannot train on train.device `device`.
    `auto` and `cpu` always can; the others need torch to tell, so a process answers."""
    if device in ("auto", "cpu"):
        return
    _run_check([sys.executable, "-m", "rrdtui.train.devicecheck", device], f"train.device {device}")


def check_teacher_checkpoint(cfg: Config) -> None:
    """Raise ConfigError (one line) when cfg's teacher.checkpoint would not load for its data set."""
    num_classes, channels = data_shape(cfg)
    cmd = [
        sys.executable, "-m", "rrdtui.train.teacher",
        str(cfg.teacher.arch), str(cfg.teacher.checkpoint),
        "-" if num_classes is None else str(num_classes), str(channels),
    ]  # fmt: skip
    _run_check(cmd, f"teacher.checkpoint {cfg.teacher.checkpoint}")


def check_method_pairing(cfg: Config) -> None:
    """Raise ConfigError (one line) when cfg's method cannot pair its student with its teacher (a
    method reading stage maps whose shapes do not fit), by building it as training will."""
    num_classes, channels = data_shape(cfg)
    request = {"config": cfg.to_dict(), "num_classes": num_classes or 10, "in_channels": channels}
    _run_check([sys.executable, "-m", "rrdtui.train.pairing"], f"method {cfg.method.name}", json.dumps(request))


def preflight(plan) -> None:
    """Check every run of a launcher Plan before it is created; raise ConfigError with one line."""
    for device in dict.fromkeys(planned.config.train.device for planned in plan.runs):
        check_device(device)
    for planned in plan.runs:
        check_data(planned.config)
    for planned in plan.runs:
        cfg = planned.config
        if cfg.distills and cfg.teacher.checkpoint:
            check_teacher_checkpoint(cfg)
        # Methods that read stage maps size their connectors from both networks: some pairs cannot be.
        if cfg.distills and {"maps", "preact"} & set(method_info(cfg.method.name).features):
            check_method_pairing(cfg)


def check_launch(cfg: Config, preset: str, store):
    """Plan the runs a launch of `cfg` (loaded from `preset`) creates, teachers first, and check them
    all; return the launcher Plan, or raise ConfigError with one line. Writes nothing."""
    from rrdtui.launcher import plan_runs

    plan = plan_runs(cfg, preset, store)
    preflight(plan)
    return plan
