"""The presets folder as a list: one line per preset, with the paper's numbers where it has them.

No torch here; used by `rrdtui presets` and the dashboard's launch screen.
"""

from __future__ import annotations

from pathlib import Path

from rrdtui.config import ConfigError, read_yaml

# The paper's table key for each of our method names.
PAPER_KEYS = {"none": "student", "kd": "KD", "rrd": "RRD", "rrd+kd": "RRD+KD", "crd": "CRD", "crd+kd": "CRD+KD"}


def preset_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.yaml") if p.is_file())


def describe(path: Path) -> str:
    """name, method, teacher -> student, data, the paper's number, and the description."""
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        return f"{path.name:<28s} (unreadable: {exc})"
    method = (raw.get("method") or {}).get("name", "rrd")
    student = (raw.get("student") or {}).get("arch", "?")
    teacher = raw.get("teacher") or {}
    teacher_arch = teacher.get("arch") or (Path(teacher["preset"]).stem if teacher.get("preset") else None)
    pair = f"{teacher_arch} -> {student}" if method != "none" else f"{student} (teacher)"
    data = (raw.get("data") or {}).get("name", "synthetic")
    paper = raw.get("paper") or {}
    number = paper.get(PAPER_KEYS.get(method, ""))
    paper_text = f"paper {number:.2f}" if isinstance(number, (int, float)) else ""
    description = (raw.get("description") or "").strip().splitlines()
    return f"{path.stem:<26s} {method:<7s} {pair:<32s} {data:<13s} {paper_text:<12s} {description[0] if description else ''}".rstrip()


def describe_presets(folder: Path) -> list[str]:
    files = preset_files(folder)
    if not files:
        raise ConfigError(f"no presets in {folder}/ (run from the project folder, or pass --dir)")
    return [describe(p) for p in files]
