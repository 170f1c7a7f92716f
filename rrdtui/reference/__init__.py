"""The paper's published numbers as project data (no torch): ``paper_results.yaml`` beside this file.

The YAML is a copy of ``reference/paper_results.yaml`` (arXiv 2407.12073's README tables; every
baseline is CRD's, arXiv 1910.10699). Pair keys are ``teacher->student`` with the architecture names
of the model zoo; values are top-1 % on CIFAR-100, ``null`` where the paper has no number.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

# The tables of paper_results.yaml that hold CIFAR-100 teacher -> student pairs, in the paper's order.
PAIR_TABLES = ("same_architecture", "different_architecture")

# Our data set names -> the row names of the transfer table (linear probe of WRN-16-2).
TRANSFER_ROWS = {"stl10": "STL-10", "tiny_imagenet": "TinyImageNet"}


@functools.cache
def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("paper_results.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def paper_results() -> dict[str, Any]:
    """The whole of paper_results.yaml (a fresh copy: callers may change it freely)."""
    return copy.deepcopy(_load())


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    """A table row without its nulls, values as floats."""
    return {
        str(k): float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def pairs() -> list[tuple[str, str, dict[str, float]]]:
    """Every CIFAR-100 pair of the paper as (teacher, student, numbers), in the paper's order."""
    out = []
    results = _load()
    for table in PAIR_TABLES:
        for key, row in (results.get(table) or {}).items():
            teacher, _, student = key.partition("->")
            out.append((teacher, student, _numbers(row)))
    return out


def pair_numbers(teacher: str, student: str) -> dict[str, float] | None:
    """The paper's row for a CIFAR-100 teacher -> student pair (nulls left out), or None."""
    for t, s, numbers in pairs():
        if t == teacher and s == student:
            return numbers
    return None


def transfer_numbers(data: str) -> dict[str, float] | None:
    """The linear-probe row of the distilled WRN-16-2 for `stl10` or `tiny_imagenet`, or None."""
    row = (_load().get("transfer_wrn_16_2") or {}).get(TRANSFER_ROWS.get(data, data))
    return _numbers(row) if row else None
