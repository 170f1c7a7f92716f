"""The presets folder as a list: one line per preset, with the paper's numbers where it has them.

No torch here; used by `rrdtui presets` and the dashboard's launch screen.

Presets outside the paper's tables come first, by name, with their description. Then the presets
of the paper's CIFAR-100 tables, grouped by teacher in the paper's order: each teacher preset, then
the students that distil from it, indented. Their paper column holds the published number for the
preset's method (the teacher's own number for a teacher preset), and the teacher column the
published accuracy of the student's teacher. Each part opens with a header line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrdtui.columns import Col, fit, terminal_columns
from rrdtui.config import ConfigError, read_yaml
from rrdtui.reference import pairs
from rrdtui.registry import paper_key

WIDTH = 80  # a line laid out alone (describe()): the width the list is designed for


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
# A folder of one's own presets, looked in after ./presets.
PRESETS_ENV = "RRDTUI_PRESETS"


def _installed_presets() -> Path | None:
    """The presets installed with rrdtui, or, run from a source checkout, the checkout's."""
    checkout = (SOURCE_PRESETS.parent / "pyproject.toml").is_file()
    for folder in (PACKAGED_PRESETS, SOURCE_PRESETS if checkout else None):
        if folder is not None and folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    return None


def preset_folders() -> list[Path]:
    """Where presets are found, in order: ./presets, then $RRDTUI_PRESETS, then the installed ones.
    Folders that do not exist are left out, and one reached twice counts once."""
    env = os.environ.get(PRESETS_ENV)
    folders: list[Path] = []
    for folder in (Path("presets"), Path(env).expanduser() if env else None, _installed_presets()):
        if folder is not None and folder.is_dir() and all(folder.resolve() != f.resolve() for f in folders):
            folders.append(folder)
    return folders


def presets_dir() -> Path:
    """The one folder the dashboard lists and saves presets in: the first of preset_folders(),
    ./presets when there are none."""
    folders = preset_folders()
    return folders[0] if folders else Path("presets")


def resolve_preset(ref: str | os.PathLike[str]) -> Path:
    """A preset given by path, or by name (`demo`, `demo.yaml`) from preset_folders().

    `rrdtui run`, `bench` and everything else taking a preset go through here. A name that is not
    found raises ConfigError in one line naming the folders looked in.
    """
    path = Path(ref).expanduser()
    if path.exists() or "/" in str(ref) or os.sep in str(ref):
        return path  # a path: read_yaml says what is wrong with it, if anything
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    folders = preset_folders()
    for folder in folders:
        for candidate in (folder / f"{stem}.yaml", folder / f"{stem}.yml"):
            if candidate.is_file():
                return candidate
    for folder in folders:  # a preset whose `name:` differs from its file's
        for candidate in preset_files(folder):
            if entry(candidate).name == stem:
                return candidate
    looked = ", ".join(f"{f}/" for f in folders) or "./presets or $RRDTUI_PRESETS (neither exists)"
    raise ConfigError(f"{ref}: preset file not found: no such file, nor preset '{stem}' in {looked} (see `rrdtui presets`)")


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
    return (_paper_lines([e], WIDTH) if e.group >= 0 else _other_lines([e], WIDTH))[1]


# Presets outside the paper's tables: name, method, pair, data and the description. When narrow,
# the description is cut (to 20 at the least), then the data set, the pair and the method go;
# names are what `rrdtui run NAME` takes, so they are never cut.
OTHER_COLUMNS = [
    Col("preset", "name"),
    Col("method", "method", order=6),
    Col("teacher -> student", "pair", order=7),
    Col("data", "data", order=8),
    Col("description", "about", order=9, cut=20, keep=True, words=True),
]
# The paper's presets: the method goes first (the paper column names it), then the pair.
PAPER_COLUMNS = [
    Col("CIFAR-100, as in the paper", "name"),
    Col("method", "method", order=9),
    Col("teacher -> student", "pair", order=8),
    Col("paper top-1", "paper"),
    Col("teacher", "teacher", right=True),
]


def _other_lines(entries: list[Entry], width: int) -> list[str]:
    """Presets outside the paper's tables, a header line first."""
    rows = []
    for e in entries:
        about = f"(unreadable: {e.error})" if e.error else e.description
        if e.paper:
            about = f"paper {e.paper}" + (f"; {about}" if about else "")
        rows.append({"name": e.name, "method": e.method, "pair": e.pair, "data": e.data, "about": about})
    return fit(OTHER_COLUMNS, rows, width)


def _paper_lines(entries: list[Entry], width: int) -> list[str]:
    """The paper's CIFAR-100 presets: each teacher, then its students indented under it."""
    rows = [
        {"name": ("  " if e.order else "") + e.name, "method": e.method, "pair": e.pair, "paper": e.paper,
         "teacher": e.teacher_acc}
        for e in entries
    ]  # fmt: skip
    return fit(PAPER_COLUMNS, rows, width)


def describe_presets(folders: Path | list[Path]) -> list[str]:
    """Other presets by name, then the paper's CIFAR-100 presets grouped by teacher in the paper's
    order; each part opens with a header line and a blank line separates them.

    From several folders (preset_folders()), a name is listed once: from the first folder that
    has it, the one `rrdtui run NAME` takes."""
    folders = [folders] if isinstance(folders, Path) else list(folders)
    files: dict[str, Path] = {}
    for folder in folders:
        for path in preset_files(folder):
            files.setdefault(path.stem, path)
    if not files:
        where = ", ".join(f"{f}/" for f in folders) or "./presets or $RRDTUI_PRESETS"
        raise ConfigError(f"no presets in {where} (run from the project folder, or pass --dir)")
    entries = [entry(p) for p in files.values()]
    others = sorted((e for e in entries if e.group < 0), key=lambda e: e.name)
    paper = sorted((e for e in entries if e.group >= 0), key=lambda e: (e.group, e.order, e.name))
    width = terminal_columns()
    lines: list[str] = []
    if others:
        lines += _other_lines(others, width)
    if paper:
        lines += ([""] if lines else []) + _paper_lines(paper, width)
    return lines
