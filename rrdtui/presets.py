"""The presets folder as a list: one line per preset, with the paper's numbers where it has them.

No torch here; used by `rrdtui presets` and the dashboard's launch screen.

Presets outside the paper's tables come first, by name, with their description. Then the presets
of the paper's CIFAR-100 tables, grouped by teacher in the paper's order: each teacher preset, then
the students that distil from it, indented. Their paper column holds the published number for the
preset's method (the teacher's own number for a teacher preset), and the teacher column the
published accuracy of the student's teacher. Each part opens with a header line.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrdtui.config import ConfigError, read_yaml
from rrdtui.reference import pairs
from rrdtui.registry import paper_key

WIDTH = 100  # the narrowest terminal the list is laid out for; wider ones show more description


@dataclass
class Entry:
    path: Path
    name: str
    method: str
    pair: str
    data: str
    paper: str = ""
    teacher_acc: str = ""
    description: str = ""
    group: int = -1  # the teacher's position in the paper's order; -1 for other presets
    order: int = 0  # teacher first (0), then the paper's pairs in order
    error: str | None = None


# The presets shipped with rrdtui: in the wheel, presets/ is installed as rrdtui/presets_data/.
PACKAGED_PRESETS = Path(__file__).resolve().parent / "presets_data"
# In a source checkout (an editable install), the repository's presets/ beside the package.
SOURCE_PRESETS = Path(__file__).resolve().parent.parent / "presets"


def presets_dir() -> Path:
    """Where the presets are: ./presets when the current folder has one, else the ones installed
    with rrdtui (or, run from a source checkout, the checkout's); ./presets when there are none."""
    local = Path("presets")
    if local.is_dir():
        return local
    checkout = (SOURCE_PRESETS.parent / "pyproject.toml").is_file()
    for folder in (PACKAGED_PRESETS, SOURCE_PRESETS if checkout else None):
        if folder is not None and folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    return local


def preset_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.yaml") if p.is_file())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _teacher_arch(path: Path, teacher: dict) -> str | None:
    """The teacher's architecture: given, or read from the teacher preset the file names."""
    if teacher.get("arch"):
        return str(teacher["arch"])
    if teacher.get("preset"):
        ref = Path(str(teacher["preset"]))
        for candidate in (path.parent / ref, ref):
            if candidate.is_file():
                try:
                    arch = ((read_yaml(candidate).get("student") or {}).get("arch"))
                except ConfigError:
                    break
                if arch:
                    return str(arch)
        return ref.stem
    return None


def _paper_order() -> tuple[list[str], list[tuple[str, str]]]:
    teachers: list[str] = []
    ordered_pairs: list[tuple[str, str]] = []
    for teacher, student, _ in pairs():
        if teacher not in teachers:
            teachers.append(teacher)
        ordered_pairs.append((teacher, student))
    return teachers, ordered_pairs


def entry(path: Path) -> Entry:
    """What one line says about a preset (read as YAML, not validated: a broken file still lists)."""
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        return Entry(path, path.stem, "", "", "", error=str(exc))
    sections = {k: raw.get(k) if isinstance(raw.get(k), dict) else {} for k in ("method", "student", "teacher", "data")}
    method = str(sections["method"].get("name", "rrd"))
    student = str(sections["student"].get("arch", "resnet8"))
    data = str(sections["data"].get("name", "synthetic"))
    paper = raw.get("paper") if isinstance(raw.get("paper"), dict) else {}
    description = str(raw.get("description") or "").strip().splitlines()
    e = Entry(path, str(raw.get("name") or path.stem), method, "", data,
              description=description[0] if description else "")

    teachers, ordered_pairs = _paper_order()
    if method == "none":
        e.pair = f"{student} (teacher)" if _number(paper.get("teacher")) is not None else student
        own = _number(paper.get("student"))
        if own is not None:
            e.paper = f"student {own:.2f}"
        elif _number(paper.get("teacher")) is not None:
            e.paper = f"teacher {_number(paper['teacher']):.2f}"
        if data == "cifar100" and student in teachers and _number(paper.get("teacher")) is not None:
            e.group, e.order = teachers.index(student), 0
        return e

    teacher_arch = _teacher_arch(path, sections["teacher"]) or "?"
    e.pair = f"{teacher_arch} -> {student}"
    key = paper_key(method) or method.upper()
    value = _number(paper.get(key))
    if value is not None:
        e.paper = f"{key} {value:.2f}"
    teacher_acc = _number(paper.get("teacher"))
    if teacher_acc is None:
        teacher_acc = _number(sections["teacher"].get("expected_acc"))
    if teacher_acc is not None:
        e.teacher_acc = f"{teacher_acc:.2f}"
    if data == "cifar100" and (teacher_arch, student) in ordered_pairs and paper:
        e.group = teachers.index(teacher_arch)
        e.order = 1 + ordered_pairs.index((teacher_arch, student))
    return e


def describe(path: Path) -> str:
    """One line for one preset (column widths of its own)."""
    e = entry(path)
    return (_paper_lines([e]) if e.group >= 0 else _other_lines([e], WIDTH))[1]


def _other_lines(entries: list[Entry], width: int) -> list[str]:
    """Presets outside the paper's tables: name, method, pair, data and the description."""
    name_w = min(32, max([len("preset")] + [len(e.name) for e in entries]))
    pair_w = min(28, max([len("teacher -> student")] + [len(e.pair) for e in entries]))
    data_w = min(13, max([len("data")] + [len(e.data) for e in entries]))
    lines = [f"{'preset':<{name_w}s} {'method':<7s} {'teacher -> student':<{pair_w}s} {'data':<{data_w}s} description"]
    for e in entries:
        if e.error:
            lines.append(_cut(f"{e.name:<{name_w}s} (unreadable: {e.error})", width))
            continue
        about = e.description
        if e.paper:
            about = f"paper {e.paper}" + (f"; {about}" if about else "")
        lines.append(_cut(
            f"{e.name:<{name_w}s} {e.method:<7s} {e.pair[:pair_w]:<{pair_w}s} {e.data[:data_w]:<{data_w}s} {about}",
            width,
        ))
    return lines


def _paper_lines(entries: list[Entry]) -> list[str]:
    """The paper's CIFAR-100 presets: each teacher, then its students indented under it."""
    names = [("  " if e.order else "") + e.name for e in entries]
    title = "CIFAR-100, as in the paper"
    name_w = max([len(title)] + [len(n) for n in names])
    pair_w = max([len("teacher -> student")] + [len(e.pair) for e in entries])
    paper_w = max([len("paper top-1")] + [len(e.paper) for e in entries])
    lines = [f"{title:<{name_w}s} {'method':<7s} {'teacher -> student':<{pair_w}s} {'paper top-1':<{paper_w}s} teacher"]
    for name, e in zip(names, entries):
        lines.append(
            f"{name:<{name_w}s} {e.method:<7s} {e.pair:<{pair_w}s} {e.paper:<{paper_w}s} {e.teacher_acc:>7s}".rstrip()
        )
    return lines


def _cut(line: str, width: int) -> str:
    line = line.rstrip()
    return line if len(line) <= width else line[: width - 3].rstrip() + "..."


def describe_presets(folder: Path) -> list[str]:
    """Other presets by name, then the paper's CIFAR-100 presets grouped by teacher in the paper's
    order; each part opens with a header line and a blank line separates them."""
    files = preset_files(folder)
    if not files:
        raise ConfigError(f"no presets in {folder}/ (run from the project folder, or pass --dir)")
    entries = [entry(p) for p in files]
    others = sorted((e for e in entries if e.group < 0), key=lambda e: e.name)
    paper = sorted((e for e in entries if e.group >= 0), key=lambda e: (e.group, e.order, e.name))
    width = max(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
    lines: list[str] = []
    if others:
        lines += _other_lines(others, width)
    if paper:
        lines += ([""] if lines else []) + _paper_lines(paper)
    return lines
