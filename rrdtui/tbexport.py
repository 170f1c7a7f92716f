"""Metric histories as TensorBoard event files, written with the `tensorboard` package alone.

`rrdtui export RUN... --format tensorboard -o DIR` writes one folder per run (DIR/<id>_<name>/), so
`tensorboard --logdir DIR` shows each run as one of its runs and each metric as a scalar series.
Neither torch nor TensorFlow is needed: tensorboard's own event writer and protocol buffers do it.
tensorboard is not a dependency of rrdtui; without it the command says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

INSTALL_HINT = "--format tensorboard needs the tensorboard package: pip install tensorboard (or uv add tensorboard)"


def available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def write_run(folder: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one run's metric rows (name, step, value, time) as an event file in `folder`."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(folder))
    try:
        for row in rows:
            value = summary_pb2.Summary.Value(tag=row["name"], simple_value=float(row["value"]))
            writer.add_event(event_pb2.Event(wall_time=row["time"], step=row["step"], summary=summary_pb2.Summary(value=[value])))
    finally:
        writer.close()
