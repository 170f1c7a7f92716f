"""A study's results as one table: seed groups, their statistics, the paper's numbers and CRD's
relative improvement over KD. Pure functions over the store, shared by `rrdtui table` and the dashboard.

- Per run: `final` (test accuracy at the last epoch), `selected` (test accuracy at the epoch of the
  best `val/acc`, only with `data.holdout`, where `val/acc` is the holdout's accuracy and `test/acc`
  the test set's) and `best` (the best test accuracy over epochs: what RepDistiller-family code
  reports as best_acc; it picks the epoch on the test set, so it is optimistic). Test accuracy is
  `test/acc` where a run has it, else `val/acc` (runs without a holdout evaluate on the test set).
- Seed groups: a study's runs (its teachers aside) whose resolved configurations differ only in
  `seed`, in cosmetic keys (config.COSMETIC_KEYS) and in `teacher.run` (a run id). Statistics use the
  group's completed runs only: N, mean, the sample standard deviation (n - 1) and the standard error
  (std / sqrt(N)); for N = 1 the standard deviation and standard error are None (shown "-"): one run
  says nothing about the spread.
- Relative improvement over KD (CRD, arXiv 1910.10699): RI = (Acc_method - Acc_KD) / (Acc_KD -
  Acc_vanilla), from the groups' final means, where the study holds a KD group and a vanilla
  (method none) group of the same setting: the same student, data and every other key but the
  method's (and, for KD, the same teacher). Averaged per method over the settings (pairs) it has.
- The paper's numbers (rrdtui.reference) are CIFAR-100's: they are shown for groups on cifar100 only.

No torch, textual or typer here; the store module is imported only when a table is built (it is slow
to import and the dashboard imports this module for `relative_improvement`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rrdtui.config import COSMETIC_KEYS, flatten
from rrdtui.reference import pair_numbers, pairs
from rrdtui.registry import paper_key

if TYPE_CHECKING:
    from rrdtui.store import Store

FORMATS = ("text", "markdown", "csv", "json", "latex")
METRICS = ("final", "selected", "best")
# What each metric is called in outputs.
METRIC_LABELS = {"final": "final", "selected": "selected", "best": "best (over epochs)"}
TEACHER_ROLE = "teacher"
# Keys that never tell seed groups apart (besides COSMETIC_KEYS): the seed, and a teacher named by run id.
IGNORED_KEYS = {"seed", "teacher.run"}
# Runs that count in the statistics.
DONE = "completed"
TEXT_WIDTH = 80


def relative_improvement(acc: float | None, kd: float | None, student: float | None) -> float | None:
    """CRD's RI = (Acc_method - Acc_KD) / (Acc_KD - Acc_student); None when it does not apply."""
    if acc is None or kd is None or student is None or kd == student:
        return None
    return (acc - kd) / (kd - student)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class Stat:
    """Statistics of one metric over a group's completed runs (values in run order)."""

    values: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); None for fewer than two runs."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def sem(self) -> float | None:
        """Standard error of the mean: std / sqrt(n); None for fewer than two runs."""
        std = self.std
        return std / math.sqrt(len(self.values)) if std is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "sem": self.sem, "values": list(self.values)}


@dataclass
class RunResult:
    """One run's accuracies (percent; None where the run has none)."""

    id: str
    status: str
    seed: int | None
    point: dict[str, Any]  # the study point (preset, grid, seed), or {"role": "teacher"}
    final: float | None
    selected: float | None
    best: float | None
    epochs: int  # epochs with a test accuracy
    teacher_acc: float | None
    teacher_run: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "seed": self.seed, "point": self.point,
            "final": _finite(self.final), "selected": _finite(self.selected), "best": _finite(self.best),
            "epochs": self.epochs, "teacher_acc": _finite(self.teacher_acc), "teacher_run": self.teacher_run,
        }  # fmt: skip


@dataclass
class Group:
    """Runs of a study that differ only in seed (and cosmetic keys)."""

    key: str  # identity: the training values but the seed, as JSON
    label: str  # what tells it apart from the study's other groups, e.g. "method=rrd tau_s=0.04"
    values: dict[str, Any]  # the label's keys (full paths) -> this group's values
    method: str
    teacher_arch: str | None
    student_arch: str
    data: str
    holdout: bool
    config: dict[str, Any]  # flattened training values (seed and cosmetic keys left out)
    grid: dict[str, Any]  # the study point's grid values
    preset: str | None
    runs: list[RunResult] = field(default_factory=list)
    final: Stat = field(default_factory=Stat)
    selected: Stat = field(default_factory=Stat)
    best: Stat = field(default_factory=Stat)
    teacher_acc: float | None = None
    paper: float | None = None  # the paper's number for this pair and method (CIFAR-100)
    ri: float | None = None  # relative improvement over KD, from final means
    kd_group: str | None = None  # labels of the groups the RI was computed against
    vanilla_group: str | None = None

    @property
    def n(self) -> int:
        """Completed runs (those in the statistics)."""
        return sum(r.status == DONE for r in self.runs)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(r.status for r in self.runs))

    @property
    def run_ids(self) -> list[str]:
        return [r.id for r in self.runs]

    @property
    def paper_diff(self) -> float | None:
        """final mean - the paper's number."""
        mean = self.final.mean
        return mean - self.paper if mean is not None and self.paper is not None else None

    def stat(self, metric: str) -> Stat:
        return getattr(self, metric)


@dataclass
class Matrix:
    """Final-accuracy means of a 2-key grid: rows one key's values, columns the other's."""

    row_key: str
    col_key: str
    rows: list[Any]
    cols: list[Any]
    cells: list[list[Group | None]]

    def means(self) -> list[list[float | None]]:
        return [[g.final.mean if g else None for g in row] for row in self.cells]


@dataclass
class MethodRI:
    """Relative improvement over KD of one method (variant), over the settings that have one."""

    method: str
    values: list[float]
    groups: list[str]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None


@dataclass
class StudyTable:
    name: str
    spec: dict[str, Any] | None  # studies.spec, or None for runs tagged with a study never saved
    groups: list[Group]
    varying: list[str]  # every training key whose values differ between groups
    label_keys: list[str]  # the fewest of those that tell the groups apart (the labels)
    ri: dict[str, MethodRI]  # per method (variant): RI averaged over pairs
    matrix: Matrix | None
    counts: dict[str, int]  # member runs by status
    teachers: list[RunResult]  # teacher runs the study trains for its students

    @property
    def holdout(self) -> bool:
        return any(g.holdout for g in self.groups)


# ---------------------------------------------------------------------------------------------
# Building the table
# ---------------------------------------------------------------------------------------------


def study_table(store: Store, name: str) -> StudyTable:
    """The table of study `name`. An unknown study raises StoreError (one line)."""
    from rrdtui.store import StoreError

    study = store.get_study(name)
    rows = store.study_runs(name)
    if study is None and not rows:
        known = [s["name"] for s in store.list_studies()]
        listed = f"known: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''}" if known else "it has none"
        raise StoreError(f"no study '{name}' in {store.path} ({listed}; see `rrdtui studies`)")
    spec = json.loads(study["spec"]) if study and study.get("spec") else None

    teachers: list[RunResult] = []
    members: list[tuple[dict[str, Any], RunResult, dict[str, Any]]] = []
    for row in rows:
        config = _json(row.get("config"))
        result = run_result(store, row, config)
        if result.point.get("role") == TEACHER_ROLE:
            teachers.append(result)
        else:
            members.append((row, result, config))

    groups: dict[str, Group] = {}
    for row, result, config in members:
        flat = training_values(config)
        key = json.dumps(flat, sort_keys=True, default=str)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(
                key=key, label="", values={}, method=row.get("method") or flat.get("method.name") or "?",
                teacher_arch=row.get("teacher_arch") or flat.get("teacher.arch"),
                student_arch=row.get("student_arch") or flat.get("student.arch") or "?",
                data=row.get("data") or flat.get("data.name") or "?", holdout=_holdout(config), config=flat,
                grid=dict(result.point.get("grid") or {}), preset=result.point.get("preset"),
            )  # fmt: skip
        group.runs.append(result)

    by_id = {t.id: t for t in teachers}
    for group in groups.values():
        _fill_statistics(group, by_id)
        group.paper = paper_number(group)

    ordered = list(groups.values())
    varying = varying_keys(ordered)
    label_keys = choose_label_keys(ordered, varying, list((spec or {}).get("grid") or {}))
    for group in ordered:
        group.values = {k: group.config.get(k, _MISSING) for k in label_keys}
        group.label = _label(group, label_keys)
    _unique_labels(ordered)
    ri = _relative_improvements(ordered, label_keys)
    matrix = build_matrix(ordered, spec, label_keys)
    counts = dict(Counter(r.status for _, r, _ in members))
    return StudyTable(name, spec, ordered, varying, label_keys, ri, matrix, counts, teachers)


def training_values(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved configuration, flattened, without the keys that never tell seed groups apart."""
    return {k: v for k, v in flatten(config).items() if k not in COSMETIC_KEYS and k not in IGNORED_KEYS}


def run_result(store: Store, row: dict[str, Any], config: dict[str, Any] | None = None) -> RunResult:
    """One run's final, selected and best test accuracy from its metric rows."""
    config = _json(row.get("config")) if config is None else config
    holdout = _holdout(config)
    val = store.series(row["id"], "val/acc")
    test = store.series(row["id"], "test/acc")
    if not test and not holdout:
        test = val  # no holdout: val/acc is the test set's accuracy
    final = test[-1][2] if test else None
    best = max(v for _, _, v in test) if test else None
    selected = None
    if holdout and val and test:
        top = max(v for _, _, v in val)
        step, epoch, _ = next(r for r in val if r[2] == top)  # the first epoch that reached it
        by_epoch = {round(e, 6): v for _, e, v in test}
        by_step = {s: v for s, _, v in test}
        selected = by_epoch.get(round(epoch, 6), by_step.get(step))
    point = _json(row.get("study_point"))
    seed = config.get("seed", point.get("seed"))
    return RunResult(
        id=row["id"], status=row.get("status") or "?", seed=seed, point=point, final=final, selected=selected,
        best=best, epochs=len(test), teacher_acc=row.get("teacher_acc"), teacher_run=row.get("teacher_run"),
    )  # fmt: skip


def _fill_statistics(group: Group, teachers: dict[str, RunResult]) -> None:
    teacher_accs = []
    for run in group.runs:
        if run.status != DONE:
            continue
        for metric in METRICS:
            value = getattr(run, metric)
            if value is not None and math.isfinite(value):
                group.stat(metric).values.append(value)
        acc = run.teacher_acc
        if acc is None and run.teacher_run in teachers:  # not measured: the study's teacher run's own
            acc = teachers[run.teacher_run].final
        if acc is not None:
            teacher_accs.append(acc)
    group.teacher_acc = statistics.fmean(teacher_accs) if teacher_accs else None


def paper_number(group: Group) -> float | None:
    """The paper's CIFAR-100 number for the group's pair and method: for method none, the vanilla
    student (or, for a teacher architecture, the teacher) of any pair with that architecture."""
    if group.data != "cifar100":
        return None
    column = paper_key(group.method)
    if column is None:
        return None
    if group.method == "none":
        for role, index in (("student", 1), ("teacher", 0)):
            for pair in pairs():
                if pair[index] == group.student_arch and role in pair[2]:
                    return pair[2][role]
        return None
    numbers = pair_numbers(group.teacher_arch or "", group.student_arch) or {}
    return numbers.get(column)


# -- labels --------------------------------------------------------------------------------------

_MISSING = "(unset)"


def _value_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def varying_keys(groups: list[Group]) -> list[str]:
    """Training keys whose values differ between groups (a key some groups lack counts), sorted."""
    keys = sorted({k for g in groups for k in g.config})
    return [k for k in keys if len({_value_key(g.config.get(k, _MISSING)) for g in groups}) > 1]


def _priority(key: str, grid_keys: list[str]) -> tuple[int, int, str]:
    if key in grid_keys:
        return (0, grid_keys.index(key), key)
    firsts = ("method.name", "student.arch", "teacher.arch", "data.name")
    if key in firsts:
        return (1, firsts.index(key), key)
    return (2, 0, key)


def choose_label_keys(groups: list[Group], varying: list[str], grid_keys: list[str] | None = None) -> list[str]:
    """The fewest varying keys that tell the groups apart, the study's grid keys first: a key whose
    values follow from those already chosen (a method's default weights, say) is left out."""
    grid_keys = grid_keys or []
    chosen: list[str] = []

    def classes(keys: list[str]) -> int:
        return len({tuple(_value_key(g.config.get(k, _MISSING)) for k in keys) for g in groups})

    target = classes(varying)
    for key in sorted(varying, key=lambda k: _priority(k, grid_keys)):
        if classes(chosen) == target:
            break
        if classes(chosen + [key]) > classes(chosen):
            chosen.append(key)
    return sorted(chosen, key=lambda k: _priority(k, grid_keys))


def short_key(key: str, keys: list[str] | None = None) -> str:
    """method.tau_s -> tau_s, method.name -> method, student.arch -> student; the full path where two
    of `keys` would read the same."""
    parts = key.split(".")
    short = parts[-2] if len(parts) > 1 and parts[-1] in ("name", "arch") else parts[-1]
    others = [k for k in (keys or []) if k != key]
    if any(short_key(k) == short for k in others):
        return key
    return short


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if value is None:
        return "null"
    return str(value)


def _label(group: Group, keys: list[str]) -> str:
    if not keys:  # nothing varies: say what the study trained
        if group.method == "none":
            return f"none {group.student_arch}"
        return f"{group.method} {group.teacher_arch or '?'}->{group.student_arch}"
    return " ".join(f"{short_key(k, keys)}={fmt_value(group.values[k])}" for k in keys)


def _unique_labels(groups: list[Group]) -> None:
    seen: Counter[str] = Counter(g.label for g in groups)
    count: Counter[str] = Counter()
    for g in groups:  # only when keys missing from some configurations read alike
        if seen[g.label] > 1:
            count[g.label] += 1
            g.label = f"{g.label} #{count[g.label]}"


# -- relative improvement ------------------------------------------------------------------------


def _setting(group: Group) -> str:
    """Everything but the method and the teacher: what a vanilla student must share."""
    return _value_key({k: v for k, v in group.config.items() if not k.startswith(("method.", "teacher."))})


def _teacher(group: Group) -> str:
    return _value_key({k: v for k, v in group.config.items() if k.startswith("teacher.") and k != "teacher.expected_acc"})


def _closest(group: Group, candidates: list[Group]) -> Group | None:
    """The candidate sharing the most method settings with group (a grid over tau_s has a KD group per
    value: the one of the same value)."""
    if not candidates:
        return None

    def shared(c: Group) -> int:
        return sum(1 for k, v in group.config.items() if k.startswith("method.") and c.config.get(k, _MISSING) == v)

    return max(candidates, key=shared)  # max keeps the first of equals


def _relative_improvements(groups: list[Group], label_keys: list[str]) -> dict[str, MethodRI]:
    out: dict[str, MethodRI] = {}
    for group in groups:
        if group.method in ("kd", "none") or group.final.mean is None:
            continue
        setting = _setting(group)
        same = [g for g in groups if g.final.mean is not None and _setting(g) == setting]
        kd = _closest(group, [g for g in same if g.method == "kd" and _teacher(g) == _teacher(group)])
        vanilla = _closest(group, [g for g in same if g.method == "none"])
        if kd is None or vanilla is None:
            continue
        group.ri = relative_improvement(group.final.mean, kd.final.mean, vanilla.final.mean)
        group.kd_group, group.vanilla_group = kd.label, vanilla.label
        if group.ri is None:
            continue
        extra = [k for k in label_keys if k.startswith("method.") and k != "method.name"]
        variant = " ".join([group.method] + [f"{short_key(k, label_keys)}={fmt_value(group.values[k])}" for k in extra])
        entry = out.setdefault(variant, MethodRI(variant, [], []))
        entry.values.append(group.ri)
        entry.groups.append(group.label)
    return out


# -- matrix --------------------------------------------------------------------------------------


def build_matrix(groups: list[Group], spec: dict[str, Any] | None, label_keys: list[str]) -> Matrix | None:
    """The final means as a matrix when the study's grid has exactly two keys (else when exactly two
    keys tell the groups apart); None when a cell would hold two groups (several presets, say)."""
    grid = (spec or {}).get("grid") or {}
    if len(grid) == 2:
        (row_key, rows), (col_key, cols) = list(grid.items())

        def value(g: Group, key: str) -> Any:
            return g.grid.get(key, g.config.get(key, _MISSING))
    elif len(label_keys) == 2:
        row_key, col_key = label_keys
        rows = _distinct(g.config.get(row_key, _MISSING) for g in groups)
        cols = _distinct(g.config.get(col_key, _MISSING) for g in groups)

        def value(g: Group, key: str) -> Any:
            return g.config.get(key, _MISSING)
    else:
        return None
    row_index = {_value_key(v): i for i, v in enumerate(rows)}
    col_index = {_value_key(v): i for i, v in enumerate(cols)}
    cells: list[list[Group | None]] = [[None] * len(cols) for _ in rows]
    for g in groups:
        i, j = row_index.get(_value_key(value(g, row_key))), col_index.get(_value_key(value(g, col_key)))
        if i is None or j is None:
            return None
        if cells[i][j] is not None:
            return None
        cells[i][j] = g
    return Matrix(row_key, col_key, list(rows), list(cols), cells)


def _distinct(values) -> list[Any]:
    out, seen = [], set()
    for v in values:
        if _value_key(v) not in seen:
            seen.add(_value_key(v))
            out.append(v)
    return out


# -- curves --------------------------------------------------------------------------------------


def group_curves(
    store: Store, group: Group, metric: str, statuses: tuple[str, ...] | None = None
) -> list[tuple[float, float, float | None]]:
    """(epoch, mean, std) of `metric` across the group's runs (those of `statuses`, default all),
    per epoch (or logged step, for train/ series), over the runs that have a value there. std is the
    sample standard deviation, None where only one run has a value."""
    by_epoch: dict[float, list[float]] = {}
    for run in group.runs:
        if statuses is not None and run.status not in statuses:
            continue
        for _, epoch, value in store.series(run.id, metric):
            if value is not None and math.isfinite(value):
                by_epoch.setdefault(round(epoch, 6), []).append(value)
    return [
        (epoch, statistics.fmean(vs), statistics.stdev(vs) if len(vs) > 1 else None)
        for epoch, vs in sorted(by_epoch.items())
    ]


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def render(table: StudyTable, fmt: str = "text") -> str:
    """The table as text (at most 80 columns), markdown, csv, json or latex; ends with a newline."""
    renderers = {"text": _text, "markdown": _markdown, "csv": _csv, "json": _json_text, "latex": _latex}
    if fmt not in renderers:
        raise ValueError(f"unknown format '{fmt}': choose from {', '.join(FORMATS)}")
    return renderers[fmt](table)


def table_dict(table: StudyTable) -> dict[str, Any]:
    """Everything, machine-readable: numbers unrounded, groups with their runs' ids and values."""
    groups = []
    for g in table.groups:
        groups.append({
            "label": g.label, "values": g.values, "method": g.method, "teacher_arch": g.teacher_arch,
            "student_arch": g.student_arch, "data": g.data, "holdout": g.holdout, "preset": g.preset,
            "grid": g.grid, "n": g.n, "counts": g.counts, "run_ids": g.run_ids,
            **{m: g.stat(m).to_dict() for m in METRICS},
            "teacher_acc": g.teacher_acc, "paper": g.paper, "paper_diff": g.paper_diff,
            "ri": g.ri, "ri_kd_group": g.kd_group, "ri_vanilla_group": g.vanilla_group,
            "runs": [r.to_dict() for r in g.runs],
        })  # fmt: skip
    matrix = None
    if table.matrix is not None:
        m = table.matrix
        matrix = {
            "rows_key": m.row_key, "cols_key": m.col_key, "rows": m.rows, "cols": m.cols, "final_mean": m.means(),
            "groups": [[g.label if g else None for g in row] for row in m.cells],
        }  # fmt: skip
    return {
        "study": table.name,
        "spec": table.spec,
        "metrics": {
            "final": "test accuracy at the last epoch",
            "selected": "test accuracy at the epoch of the best holdout val/acc (runs with data.holdout)",
            "best": "best test accuracy over epochs (what RepDistiller-family code reports as best_acc)",
            "std": "sample standard deviation (n - 1), null for n = 1",
            "sem": "standard error of the mean, std / sqrt(n)",
            "ri": "(final - KD final) / (KD final - vanilla final), from group means (CRD)",
        },
        "varying": table.varying,
        "label_keys": table.label_keys,
        "counts": table.counts,
        "groups": groups,
        "ri_by_method": {
            k: {"mean": v.mean, "pairs": len(v.values), "values": v.values, "groups": v.groups}
            for k, v in table.ri.items()
        },
        "matrix": matrix,
        "teachers": [t.to_dict() for t in table.teachers],
    }


def _json_text(table: StudyTable) -> str:
    return json.dumps(_sanitize(table_dict(table)), indent=1, allow_nan=False) + "\n"


def _csv(table: StudyTable) -> str:
    keys = table.label_keys
    header = ["study", "group", *keys, "method", "teacher_arch", "student_arch", "data", "n", "runs", "statuses"]
    for m in METRICS:
        header += [f"{m}_mean", f"{m}_std", f"{m}_sem"]
    header += ["teacher_acc", "paper", "paper_diff", "ri", "run_ids"]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for g in table.groups:
        row: list[Any] = [table.name, g.label, *(fmt_value(g.values[k]) for k in keys)]
        statuses = " ".join(f"{k}:{v}" for k, v in g.counts.items())
        row += [g.method, g.teacher_arch or "", g.student_arch, g.data, g.n, len(g.runs), statuses]
        for m in METRICS:
            s = g.stat(m)
            row += [_raw(s.mean), _raw(s.std), _raw(s.sem)]
        row += [_raw(g.teacher_acc), _raw(g.paper), _raw(g.paper_diff), _raw(g.ri), " ".join(g.run_ids)]
        writer.writerow(row)
    return out.getvalue()


# -- columns shared by text, markdown and latex ----------------------------------------------------


@dataclass
class _Column:
    name: str
    cell: Any  # (Group, pm) -> str
    drop: int  # the order in which text drops it to fit 80 columns (0: never)
    numeric: bool = True


def _pm(stat: Stat, pm: str) -> str:
    if stat.mean is None:
        return "-"
    return f"{stat.mean:.2f}" + (f"{pm}{stat.std:.2f}" if stat.std is not None else "")


def _columns(table: StudyTable, wide: bool) -> list[_Column]:
    groups = table.groups
    cols = [
        _Column("group", lambda g, pm: g.label, 0, numeric=False),
        _Column("N", lambda g, pm: str(g.n) if g.n == len(g.runs) else f"{g.n}/{len(g.runs)}", 0),
        _Column("final", lambda g, pm: _pm(g.final, pm), 0),
    ]
    if wide:
        cols.append(_Column("final s.e.", lambda g, pm: _num(g.final.sem), 0))
    if any(g.selected.mean is not None for g in groups):
        cols.append(_Column("selected", lambda g, pm: _pm(g.selected, pm), 6))
    cols.append(_Column("best (over epochs)" if wide else "best*", lambda g, pm: _pm(g.best, pm), 5))
    if any(g.teacher_acc is not None for g in groups):
        cols.append(_Column("teacher", lambda g, pm: _num(g.teacher_acc), 1))
    if any(g.paper is not None for g in groups):
        cols.append(_Column("paper", lambda g, pm: _num(g.paper), 3))
        cols.append(_Column("Δ paper" if wide else "Δpaper", lambda g, pm: _signed(g.paper_diff), 2))
    if any(g.ri is not None for g in groups):
        cols.append(_Column("RI", lambda g, pm: _num(g.ri), 4))
    return cols


def _text(table: StudyTable) -> str:
    lines = textwrap.wrap(_headline(table), TEXT_WIDTH, subsequent_indent="  ")
    if not table.groups:
        lines.append("no runs yet")
        return "\n".join(lines) + "\n"
    cols = _columns(table, wide=False)
    cells = [[c.cell(g, "±") for c in cols] for g in table.groups]
    dropped: list[str] = []
    label_width = max(len(c) for c in [cols[0].name] + [r[0] for r in cells])

    def width(columns: list[int], label: int) -> int:
        widths = [label] + [max(len(cols[i].name), *(len(r[i]) for r in cells)) for i in columns[1:]]
        return sum(widths) + 2 * (len(widths) - 1)

    keep = list(range(len(cols)))
    label = min(label_width, 28)
    for i in sorted((i for i in keep if cols[i].drop), key=lambda i: cols[i].drop):
        if width(keep, label) <= TEXT_WIDTH:
            break
        keep.remove(i)
        dropped.append(cols[i].name)
    while width(keep, label) > TEXT_WIDTH and label > 10:
        label -= 1
    if width(keep, label) <= TEXT_WIDTH:  # room to spare: give it to the label
        label = min(label_width, label + TEXT_WIDTH - width(keep, label))
    widths = [label] + [max(len(cols[i].name), *(len(r[i]) for r in cells)) for i in keep[1:]]

    def line(values: list[str]) -> str:
        parts = [_fit(values[0], label).ljust(label)] + [v.rjust(w) for v, w in zip(values[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    lines.append(line([cols[i].name for i in keep]))
    for row in cells:
        lines.append(line([row[i] for i in keep]))
    notes = []
    if "best*" in [cols[i].name for i in keep]:
        notes.append("best* = best test accuracy over epochs (what RepDistiller-family code reports as best_acc).")
    notes.append("± is the sample standard deviation over seeds (n-1); N counts completed runs.")
    if dropped:
        notes.append(f"Left out to fit {TEXT_WIDTH} columns: {', '.join(dropped)} (see --format markdown).")
    lines += textwrap.wrap(" ".join(notes), TEXT_WIDTH)
    lines += _ri_lines(table)
    lines += _matrix_text(table)
    return "\n".join(text[:TEXT_WIDTH] for text in lines) + "\n"  # the columns were fitted: never cuts


def _headline(table: StudyTable) -> str:
    runs = sum(table.counts.values())
    text = f"study {table.name}: {len(table.groups)} group{'s' * (len(table.groups) != 1)}, {runs} run{'s' * (runs != 1)}"
    if table.counts:
        text += f" ({_statuses(table.counts, ', ')})"
    if table.teachers:
        tcounts = dict(Counter(t.status for t in table.teachers))
        text += f"; teachers: {_statuses(tcounts, ', ')}"
    others = sum(n for s, n in table.counts.items() if s != DONE)
    if others:
        text += "; only completed runs count in the statistics"
    if table.holdout:
        text += "; selected = test accuracy at the epoch of the best holdout accuracy"
    return text


def _ri_lines(table: StudyTable) -> list[str]:
    if not table.ri:
        return []
    parts = [
        f"{k} {_num(v.mean)} ({len(v.values)} pair{'s' * (len(v.values) != 1)})" for k, v in table.ri.items()
    ]
    return textwrap.wrap(
        "Relative improvement over KD, (acc - KD) / (KD - vanilla), mean over pairs: " + ", ".join(parts),
        TEXT_WIDTH,
        subsequent_indent="  ",
    )


def _matrix_text(table: StudyTable) -> list[str]:
    m = table.matrix
    if m is None:
        return []
    keys = [m.row_key, m.col_key]
    title = f"final (mean) by {short_key(m.row_key, keys)} (rows) and {short_key(m.col_key, keys)} (columns):"
    for transpose in (False, True):
        rows, cols = (m.rows, m.cols) if not transpose else (m.cols, m.rows)
        means = m.means() if not transpose else [list(c) for c in zip(*m.means())]
        head = [""] + [fmt_value(c) for c in cols]
        body = [[fmt_value(r)] + [_num(v) for v in row] for r, row in zip(rows, means)]
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        text = [
            "  ".join([row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:])]).rstrip()
            for row in [head] + body
        ]
        if max(len(t) for t in text) <= TEXT_WIDTH:
            if transpose:
                title = f"final (mean) by {short_key(m.col_key, keys)} (rows) and {short_key(m.row_key, keys)} (columns):"
            return [""] + textwrap.wrap(title, TEXT_WIDTH) + text
    return ["", "The matrix is too wide for the terminal: see --format markdown."]


def _markdown(table: StudyTable) -> str:
    cols = _columns(table, wide=True)
    lines = [f"**{_md(table.name)}**: " + _md(_headline(table).split(": ", 1)[1]), ""]
    if table.groups:
        lines.append("| " + " | ".join(c.name for c in cols) + " |")
        lines.append("|" + "|".join("---:" if c.numeric else "---" for c in cols) + "|")
        for g in table.groups:
            lines.append("| " + " | ".join(_md(c.cell(g, " ± ")) for c in cols) + " |")
        lines += ["", "± is the sample standard deviation over seeds (n-1); s.e. the standard error; N counts completed runs."]
    if table.ri:
        lines += ["", "| method | relative improvement over KD (mean) | pairs |", "|---|---:|---:|"]
        lines += [f"| {_md(k)} | {_num(v.mean)} | {len(v.values)} |" for k, v in table.ri.items()]
    m = table.matrix
    if m is not None:
        keys = [m.row_key, m.col_key]
        lines += ["", f"final (mean ± std) by {_md(short_key(m.row_key, keys))} (rows) and {_md(short_key(m.col_key, keys))} (columns):", ""]
        lines.append("| | " + " | ".join(_md(fmt_value(c)) for c in m.cols) + " |")
        lines.append("|---|" + "---:|" * len(m.cols))
        for r, row in zip(m.rows, m.cells):
            lines.append(f"| {_md(fmt_value(r))} | " + " | ".join(_pm(g.final, " ± ") if g else "-" for g in row) + " |")
    return "\n".join(lines) + "\n"


def _latex(table: StudyTable) -> str:
    cols = _columns(table, wide=True)
    cols = [c for c in cols if c.name != "final s.e."]
    pm = r" $\pm$ "
    lines = [
        f"% study {table.name}: mean $\\pm$ sample standard deviation over seeds (n-1); N counts completed runs",
        r"\begin{tabular}{" + "".join("r" if c.numeric else "l" for c in cols) + "}",
        r"\hline",
        " & ".join(_tex(c.name) for c in cols) + r" \\",
        r"\hline",
    ]
    for g in table.groups:
        lines.append(" & ".join(_tex(c.cell(g, "\x00")).replace("\x00", pm) for c in cols) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# -- small helpers -------------------------------------------------------------------------------


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _holdout(config: dict[str, Any]) -> bool:
    return bool((config.get("data") or {}).get("holdout"))


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _sanitize(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v) for v in value]
    return value


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _raw(value: float | None) -> str:
    return "" if value is None else repr(value)


def _statuses(counts: dict[str, int], sep: str) -> str:
    order = ("completed", "running", "queued", "stopped", "failed", "crashed", "diverged")
    keys = sorted(counts, key=lambda s: (order.index(s) if s in order else len(order), s))
    return sep.join(f"{counts[k]} {k}" for k in keys)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
        "Δ": r"$\Delta$", "…": r"\ldots{}"}  # fmt: skip


def _tex(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in text)
