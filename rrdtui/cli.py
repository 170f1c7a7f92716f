"""The `rrdtui` command: thin Typer commands over the library; no command opens the dashboard.

Known problems (a bad preset, an unknown run, missing data) print one line on stderr and exit with
code 2, never a traceback. Heavy imports stay inside the commands; torch is never imported here.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:  # the store pulls in sqlite-utils and numpy: imported by the commands that read it
    from rrdtui.store import Store

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    help="Knowledge distillation with Relational Representation Distillation (RRD): train, watch, compare.",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

# No envvar here: RRDTUI_RUNS comes last, after --runs given to the command or before it (open_store).
RunsOption = Annotated[
    Optional[Path],
    typer.Option("--runs", help="Folder of the run store (default $RRDTUI_RUNS, else ./runs)."),
]


# Every command taking a preset takes its name or its file (rrdtui.presets.resolve_preset).
PresetArgument = Annotated[
    str,
    typer.Argument(
        metavar="PRESET", help="A preset: its name (see `rrdtui presets`) or its file, e.g. demo or presets/demo.yaml."
    ),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a key: --set method.tau_s=0.05 (repeatable)."),
]


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def user_error_types() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix. Each module's is looked up only once that module is
    loaded (one never imported cannot have raised it), so this module imports neither the
    configuration nor the store (sqlite-utils, numpy: a second of start-up) until a command does."""
    found: list[type[Exception]] = [UserError]
    for module, name in (("rrdtui.config", "ConfigError"), ("rrdtui.store", "StoreError")):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def user_errors(fn):
    """Turn the known error types into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, user_error_types()):
                typer.echo(f"rrdtui: error: {exc}", err=True)
                raise typer.Exit(2) from None
            if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):  # a write to a read-only store
                typer.echo(f"rrdtui: error: the run store is read-only ({exc}): choose a writable folder with --runs", err=True)
                raise typer.Exit(2) from None
            raise

    return wrapper


# `rrdtui --runs DIR COMMAND`: the folder given before the command, set by main_callback (which
# runs before every command; typer's Context is not reachable from helpers without a parameter).
_callback_runs: Path | None = None


def runs_dir(runs: Path | None) -> Path:
    """The store folder: the command's --runs, else the one given before the command, else
    $RRDTUI_RUNS, else ./runs."""
    if runs is not None:
        return runs
    if _callback_runs is not None:
        return _callback_runs
    from rrdtui.store import default_runs_dir

    return default_runs_dir()


def open_store(runs: Path | None, write: bool = True) -> Store:
    """The store for a command. Commands that only read (`write=False`) open a store they cannot
    write read-only; the others are refused one, in one line, before they do anything."""
    from rrdtui.store import Store

    folder = runs_dir(runs)
    return Store(folder, readonly=not write and not store_writable(folder))


def store_writable(folder: Path) -> bool:
    """rrdtui.store.store_writable, imported when a command opens the store (not at start-up)."""
    from rrdtui.store import store_writable as writable

    return writable(folder)


def fmt_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def fmt_acc(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


# ---------------------------------------------------------------------------------------------
# no command: the dashboard
# ---------------------------------------------------------------------------------------------


@app.callback()
def main_callback(
    ctx: typer.Context,
    runs: RunsOption = None,
) -> None:
    """With no command, open the dashboard."""
    global _callback_runs
    _callback_runs = runs  # every command's store, unless it is given its own --runs
    if ctx.invoked_subcommand is None:
        from rrdtui.presets import presets_dir
        from rrdtui.tui.app import run_app

        run_app(runs_dir(runs), presets_dir())


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


@app.command()
@user_errors
def run(
    preset: PresetArgument,
    set_: SetOption = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; print the run id.")] = False,
    runs: RunsOption = None,
) -> None:
    """Train a preset (its teacher first, when the store has none), with a progress bar."""
    from rrdtui.config import load_preset
    from rrdtui.launcher import create_runs, spawn_worker
    from rrdtui.preflight import check_launch
    from rrdtui.presets import resolve_preset

    path = resolve_preset(preset)
    cfg = load_preset(path, set_ or [])
    store = open_store(runs)
    # A device, data or teacher that cannot serve: one line now, before any run row is written.
    plan = check_launch(cfg, str(path), store)
    ids = create_runs(plan, store)
    for note in plan.notes:
        typer.echo(note, err=detach)
    proc = spawn_worker(store, ids, detach=detach)
    if detach:
        announce_detached(store, ids)
        return
    follow_to_end(store, ids, proc)


def announce_detached(store: Store, ids: list[str]) -> None:
    """Teachers that train first and the log on stderr; the run's id alone as stdout's last line."""
    for run_id in ids[:-1]:
        typer.echo(f"teacher run {run_id} trains first", err=True)
    typer.echo(f"log: {Path(store.get_run(ids[-1])['run_dir']) / 'train.log'}", err=True)
    typer.echo(ids[-1])


def follow_to_end(store: Store, ids: list[str], proc) -> None:
    """Show progress until the trainer exits, then the summary; exit 1 unless every run completed."""
    from rrdtui.progress import follow

    follow(store, ids, proc)
    rows = [store.get_run(i) for i in ids]
    summarise(store, rows)
    if any(r["status"] != "completed" for r in rows):
        raise typer.Exit(1)


def summarise(store: Store, rows: list[dict]) -> None:
    typer.echo("")
    for row in rows:
        role = "teacher" if row["kind"] == "train" and row is not rows[-1] else "student" if row["kind"] != "train" else "model"
        latest = store.latest(row["id"])
        line = (
            f"{role:8s} {row['id']}  {row['name']:<20s} {row['student_arch']:<12s} {row['status']:<10s}"
            f" val/acc {fmt_acc(latest.get('val/acc'))}  best {fmt_acc(row.get('best_acc'))}"
        )
        check = teacher_check(store, row["id"])
        if row.get("teacher_acc") is not None:
            line += f"  (teacher {row['teacher_acc']:.2f}" + (": TEACHER CHECK failed)" if check else ")")
        typer.echo(line)
        for problem in (check, row.get("error")):
            if problem:
                typer.echo(f"         {problem}")
    typer.echo(f"\nRuns are in {store.runs_dir}/ (store {store.path}; each run's folder holds its log and checkpoints).")
    typer.echo(f"Details: rrdtui show {rows[-1]['id']}    Dashboard: uv run rrdtui")


# ---------------------------------------------------------------------------------------------
# ls, show, export
# ---------------------------------------------------------------------------------------------


def run_summary(store: Store, row: dict) -> dict:
    from rrdtui.runfilter import run_note, run_tags

    config = json.loads(row["config"]) if row.get("config") else {}
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "method": row["method"],
        "teacher": row.get("teacher_arch"),
        "student": row["student_arch"],
        "data": row["data"],
        "epoch": row["epoch"],
        "epochs": row["epochs"],
        "step": row["step"],
        "pid": row.get("pid"),
        "host": row.get("host"),
        "teacher_run": row.get("teacher_run"),
        "teacher_acc": row.get("teacher_acc"),
        "best_acc": row.get("best_acc"),
        "created": row.get("created"),
        "started": row.get("started"),
        "ended": row.get("ended"),
        "error": row.get("error"),
        "run_dir": row.get("run_dir"),
        "paper": config.get("paper"),
        "metrics": store.latest(row["id"]),
        "teacher_check": teacher_check(store, row["id"]),
        "tags": run_tags(store, row["id"]),
        "note": run_note(store, row["id"]),
        "config": config,
    }


def _ls_columns():
    from rrdtui.columns import Col

    # When the terminal is narrow, columns give up room from the highest `order` down: the start
    # time, the note, the pair, the tags, then the name is cut (to 10 at the least), then the
    # accuracy and the epoch go. Ids, methods, temperatures, statuses and best accuracies stay.
    return [
        Col("id", "id"),
        Col("name", "name", order=6, cut=10, keep=True),
        Col("method", "method"),
        Col("τs/τt", "temps"),
        Col("status", "status"),
        Col("epoch", "epoch", right=True, order=4),
        Col("val/acc", "val", right=True, order=5),
        Col("best", "best", right=True),
        Col("teacher -> student", "pair", order=8),
        Col("tags", "tags", order=7, cut=8),
        Col("note", "note", order=9, cut=12, words=True),
        Col("started", "started", order=10),
    ]


@app.command("ls")
@user_errors
def list_runs(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list of runs.")] = False,
    filters: Annotated[
        Optional[list[str]],
        typer.Option(
            "--filter", metavar="KEY=VALUE",
            help="Only runs whose KEY is VALUE: status, tag, method, or any configuration key (tau_s=0.07 "
            "matches method.tau_s). Repeatable: all must hold.",
        ),
    ] = None,
    runs: RunsOption = None,
) -> None:
    """List runs, newest first."""
    store = open_store(runs, write=False)
    rows = store.list_runs()
    if filters:
        from rrdtui.runfilter import check_keys, matches, parse_filters, run_tags

        parsed = parse_filters(filters)
        check_keys(parsed, rows)
        rows = [row for row in rows if matches(row, parsed, run_tags(store, row["id"]))]
    if as_json:
        out = []
        for row in rows:
            summary = run_summary(store, row)
            summary.pop("config")
            out.append(summary)
        typer.echo(json.dumps(out, indent=2))
        return
    if not rows:
        if filters:
            typer.echo(f"no runs in {store.path} match {' '.join('--filter ' + f for f in filters)}")
        else:
            typer.echo(f"no runs in {store.path}: start one with `rrdtui run demo`")
        return
    from rrdtui.columns import fit, terminal_columns

    cells = [ls_cells(store, row) for row in rows]
    cols = [c for c in _ls_columns() if c.key not in ("tags", "note") or any(cell[c.key] for cell in cells)]
    for line in fit(cols, cells, terminal_columns()):
        typer.echo(line)


def temperatures(row: dict, config: dict) -> str:
    """RRD's τs/τt as given (never rounded: two runs differing in tau_s must look different), or "-"
    for a method that has no use for them."""
    from rrdtui.registry import uses_relation_temperatures

    method = config.get("method") or {}
    if not uses_relation_temperatures(row["method"]) or "tau_s" not in method:
        return "-"
    return f"{method['tau_s']}/{method['tau_t']}"


def ls_cells(store: Store, row: dict) -> dict[str, str]:
    """One run as the text of `rrdtui ls`'s columns."""
    from rrdtui.runfilter import run_note, run_tags

    config = json.loads(row["config"]) if row.get("config") else {}
    pair = f"{row['teacher_arch'] or '-'} -> {row['student_arch']}" if row["kind"] != "train" else row["student_arch"]
    return {
        "id": row["id"],
        "name": row["name"],
        "method": row["method"],
        "temps": temperatures(row, config),
        "status": row["status"],
        "epoch": f"{row['epoch']}/{row['epochs']}",
        "val": fmt_acc(store.latest(row["id"]).get("val/acc")),
        "best": fmt_acc(row.get("best_acc")),
        "pair": pair,
        "tags": ",".join(run_tags(store, row["id"])),
        "note": run_note(store, row["id"]) or "",
        "started": fmt_time(row.get("started")),
    }


@app.command()
@user_errors
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="A run id or a unique prefix of one.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as one JSON object.")] = False,
    runs: RunsOption = None,
) -> None:
    """Show one run: status, latest metrics, configuration, events."""
    from rrdtui.config import world_summary

    store = open_store(runs, write=False)
    row = store.resolve_run(run_ref)
    summary = run_summary(store, row)
    if as_json:
        summary["events"] = store.events(row["id"])
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"run {row['id']}  {row['name']}  [{row['status']}]")
    pair = f"{row['teacher_arch']} -> {row['student_arch']}" if row["kind"] != "train" else row["student_arch"]
    typer.echo(f"  {row['method']}  {pair}  on {row['data']}  epoch {row['epoch']}/{row['epochs']}  step {row['step']}")
    typer.echo(f"  started {fmt_time(row.get('started'))}  ended {fmt_time(row.get('ended'))}  folder {row['run_dir']}")
    typer.echo(f"  {world_summary(summary['config'])}")  # processes, global batch, learning rate
    typer.echo(f"  best val/acc {fmt_acc(row.get('best_acc'))}  (latest {fmt_acc(summary['metrics'].get('val/acc'))})")
    if row.get("teacher_acc") is not None:
        expected = (summary["config"].get("teacher") or {}).get("expected_acc")
        typer.echo(f"  teacher accuracy (measured): {row['teacher_acc']:.2f}%" + (f", expected {expected:.2f}%" if expected is not None else ""))
    if summary["teacher_check"]:
        typer.echo(f"  {summary['teacher_check']}")
    if summary["paper"]:
        typer.echo("  paper: " + ", ".join(f"{k} {v}" for k, v in summary["paper"].items()))
    if summary["tags"]:
        typer.echo("  tags: " + ", ".join(summary["tags"]))
    if summary["note"]:
        typer.echo(f"  note: {summary['note']}")
    if row.get("error"):
        typer.echo(f"  error: {row['error']}")
    typer.echo("  latest metrics:")
    for name, value in sorted(summary["metrics"].items()):
        typer.echo(f"    {name:<22s} {value:.4f}")
    config = shown_config(row, summary["config"])
    method = config.get("method", {})
    typer.echo(
        "  method: " + ", ".join(f"{k}={method[k]}" for k in ("gamma", "alpha", "beta", "kd_T", "tau_s", "tau_t") if k in method)
    )
    typer.echo("  configuration (resolved):")
    from rrdtui.config import flatten

    for key, value in flatten(config).items():
        typer.echo(f"    {key:<28s} {json.dumps(value) if not isinstance(value, str) else value}".rstrip())


def shown_config(row: dict, config: dict) -> dict:
    """The resolved configuration as `show` prints it: without RRD's temperatures for a method that
    has no use for them (they would read as if they mattered)."""
    from rrdtui.registry import uses_relation_temperatures

    if uses_relation_temperatures(row["method"]) or "method" not in config:
        return config
    method = {k: v for k, v in config["method"].items() if k not in ("tau_s", "tau_t")}
    return {**config, "method": method}


def teacher_check(store: Store, run_id: str) -> str | None:
    """The trainer's TEACHER CHECK warning for a run, or None (rrdtui.store.teacher_check_warning)."""
    from rrdtui.store import teacher_check_warning

    return teacher_check_warning(store.events(run_id))


@app.command()
@user_errors
def export(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN", help="One or more run ids (or prefixes).")],
    fmt: Annotated[str, typer.Option("--format", help="csv, json or tensorboard (needs the tensorboard package).")] = "csv",
    wide: Annotated[
        bool, typer.Option("--wide", help="One row per run and step, one column per metric (csv, json).")
    ] = False,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write to a file (a folder for tensorboard) instead of stdout.")
    ] = None,
    runs: RunsOption = None,
) -> None:
    """Export runs' metric histories: rows of run_id, name, step, epoch, value, time (or --wide)."""
    if fmt not in ("csv", "json", "tensorboard"):
        raise UserError(f"--format must be csv, json or tensorboard, got '{fmt}'")
    if fmt == "tensorboard":
        export_tensorboard(run_refs, output, runs)
        return
    if output is not None:
        check_output_file(output, f"metrics.{fmt}")
    store = open_store(runs, write=False)
    rows = []
    for ref in run_refs:
        rows.extend(store.all_metrics(store.resolve_run(ref)["id"]))
    fields = ["run_id", "name", "step", "epoch", "value", "time"]
    if wide:
        rows, fields = widen(rows)
    handle = io.StringIO(newline="") if output else sys.stdout
    if fmt == "json":
        json.dump(rows, handle, indent=1)
        handle.write("\n")
    else:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    if output:
        write_file_atomic(output, handle.getvalue())


def widen(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Long metric rows as one row per (run, step) with a column per metric (empty where a metric has
    no value at that step); the columns: run_id, step, epoch, then the metric names sorted."""
    names = sorted({r["name"] for r in rows})
    wide: dict[tuple[str, int], dict] = {}
    for r in rows:
        row = wide.setdefault((r["run_id"], r["step"]), {"run_id": r["run_id"], "step": r["step"], "epoch": r["epoch"]})
        row["epoch"] = max(row["epoch"], r["epoch"])  # a step's evaluation reads as the epoch it ends
        row[r["name"]] = r["value"]
    return list(wide.values()), ["run_id", "step", "epoch", *names]


def export_tensorboard(run_refs: list[str], output: Path | None, runs: Path | None) -> None:
    """Each run's metrics as TensorBoard event files in a folder of its own under `output`."""
    from rrdtui import tbexport

    if not tbexport.available():
        raise UserError(tbexport.INSTALL_HINT)
    if output is None:
        raise UserError("--format tensorboard writes a folder: give it with -o DIR (then `tensorboard --logdir DIR`)")
    if output.exists() and not output.is_dir():
        raise UserError(f"-o {output}: is a file: --format tensorboard writes a folder, give a folder's path")
    store = open_store(runs, write=False)
    chosen = [store.resolve_run(ref) for ref in run_refs]  # every run known before anything is written
    for row in chosen:
        folder = output / f"{row['id']}_{row['name']}"
        try:
            tbexport.write_run(folder, store.all_metrics(row["id"]))
        except OSError as exc:
            raise UserError(f"-o {output}: cannot write ({exc.strerror or exc}): choose another folder") from None
        typer.echo(f"wrote {folder}/")
    typer.echo(f"view with: tensorboard --logdir {output}")


def check_output_file(path: Path, example: str) -> None:
    """Refuse an output path that cannot become a file: one line naming it and the fix."""
    if path.is_dir():
        raise UserError(f"-o {path}: is a folder: give a file name in it, e.g. -o {path / example}")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise UserError(f"-o {path}: the folder {parent} {what}: create it first or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"-o {path}: cannot write there (permission denied or read-only): choose another path")


def write_file_atomic(path: Path, text: str) -> None:
    """Write text to path whole or not at all (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"-o {path}: cannot write ({exc.strerror or exc}): choose another path") from None


# ---------------------------------------------------------------------------------------------
# export-model, note, tag
# ---------------------------------------------------------------------------------------------


@app.command("export-model")
@user_errors
def export_model(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="A run id (or a unique prefix).")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="The file to write (default ./<id>_<arch>.pth).")
    ] = None,
    last: Annotated[bool, typer.Option("--last", help="The final weights instead of the best validation ones.")] = False,
    runs: RunsOption = None,
) -> None:
    """Write a run's student as {"model": state_dict} with arch, num_classes, acc and epoch: the file
    RepDistiller and mdistiller load, and a teacher checkpoint for rrdtui."""
    import subprocess

    store = open_store(runs, write=False)
    row = store.resolve_run(run_ref)
    which = "last" if last else "best"
    folder = Path(row["run_dir"])
    if not (folder / "last.pt").is_file() or not (folder / f"{which}.pt").is_file():
        raise UserError(f"run {row['id']} has no {folder / (which + '.pt')} yet: it has not finished an epoch")
    output = output if output is not None else Path(f"{row['id']}_{row['student_arch']}.pth")
    check_output_file(output, f"{row['id']}.pth")
    cmd = [sys.executable, "-m", "rrdtui.train.export_model", str(folder), str(output), which]
    if last:  # the final accuracy is the store's; best.pt carries its own
        final = store.latest(row["id"]).get("val/acc")
        cmd += [str(final)] if final is not None else []
    # The weights are read and written by a process with torch (this one never imports it).
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    lines = [line for line in (proc.stderr or "").splitlines() if line.strip()]
    if proc.returncode != 0:
        raise UserError(lines[-1] if lines else f"exporting run {row['id']} failed (exit code {proc.returncode})")
    typer.echo(proc.stdout.strip())


@app.command()
@user_errors
def note(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="A run id (or a unique prefix).")],
    text: Annotated[Optional[str], typer.Argument(metavar="TEXT", help='The note ("" removes it); none prints it.')] = None,
    runs: RunsOption = None,
) -> None:
    """Keep a note on a run (shown by ls and show), or print it."""
    from rrdtui.runfilter import NOTE, run_note

    store = open_store(runs, write=text is not None)
    row = store.resolve_run(run_ref)
    if text is None:
        typer.echo(run_note(store, row["id"]) or f"run {row['id']} has no note")
        return
    if "\n" in text:
        raise UserError("a note is one line: `rrdtui ls` and `show` print it on one")
    store.put_artifact(row["id"], NOTE, text.strip() or None)
    typer.echo(f"note on {row['id']}: {text.strip()}" if text.strip() else f"note on {row['id']} removed")


@app.command()
@user_errors
def tag(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="A run id (or a unique prefix).")],
    tags: Annotated[list[str], typer.Argument(metavar="TAG", help="Tags to add (or, with --remove, to remove).")],
    remove: Annotated[bool, typer.Option("--remove", "-r", help="Remove these tags instead.")] = False,
    runs: RunsOption = None,
) -> None:
    """Tag a run (shown by ls and show; `rrdtui ls --filter tag=TAG` lists the runs that have it)."""
    from rrdtui.runfilter import TAGS, run_tags

    for name in tags:
        if not name or any(c.isspace() or c in ",=" for c in name):
            raise UserError(f"tag '{name}': a tag is one word without commas or '=' (e.g. baseline, paper-recipe)")
    store = open_store(runs)
    row = store.resolve_run(run_ref)
    have = run_tags(store, row["id"])
    now = sorted(set(have) - set(tags)) if remove else sorted(set(have) | set(tags))
    store.put_artifact(row["id"], TAGS, now)
    typer.echo(f"tags of {row['id']}: {', '.join(now) or '(none)'}")


# ---------------------------------------------------------------------------------------------
# stop, resume, logs, rm
# ---------------------------------------------------------------------------------------------


@app.command()
@user_errors
def stop(
    run_ref: Annotated[str, typer.Argument(metavar="RUN|STUDY")],
    runs: RunsOption = None,
) -> None:
    """Stop a running run cleanly (it finishes its step, writes a checkpoint and ends as stopped), or
    every run of a study."""
    from rrdtui.launcher import request_stop

    store = open_store(runs)
    if store.get_study(run_ref) is not None:
        from rrdtui.studies.runner import stop_study

        stopped = stop_study(store, run_ref)
        typer.echo(f"stop requested for study {run_ref} ({len(stopped)} runs); continue it with `rrdtui study` on its file")
        return
    run_id = request_stop(store, run_ref)
    typer.echo(f"stop requested for {run_id}; resume later with `rrdtui resume {run_id}`")


@app.command()
@user_errors
def resume(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    nproc: Annotated[
        Optional[int],
        typer.Option("--nproc", help="Resume on another number of processes (the per-process batch changes)."),
    ] = None,
    runs: RunsOption = None,
) -> None:
    """Continue a stopped, crashed or failed run from its last checkpoint to its configured end."""
    from rrdtui.launcher import resume as resume_runs

    store = open_store(runs)
    ids, proc = resume_runs(store, run_ref, detach=detach, nproc=nproc)
    if detach:
        announce_detached(store, ids)
        return
    follow_to_end(store, ids, proc)


@app.command()
@user_errors
def logs(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")] = False,
    runs: RunsOption = None,
) -> None:
    """Print a run's log (and follow it with -f)."""
    store = open_store(runs, write=False)
    row = store.resolve_run(run_ref)
    path = Path(row["run_dir"]) / "train.log"
    if not path.exists():
        raise UserError(f"run {row['id']} has no log yet ({path})")
    with open(path, errors="replace") as fh:
        sys.stdout.write(fh.read())
        sys.stdout.flush()
        while follow_:
            line = fh.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
                continue
            if store.get_run(row["id"])["status"] not in ("running", "queued"):
                break
            time.sleep(0.5)


@app.command()
@user_errors
def rm(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN", help="Run ids (or unique prefixes of them).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Remove a teacher even when students of it have not kept its weights yet.")
    ] = False,
    runs: RunsOption = None,
) -> None:
    """Remove finished runs: their rows, metrics and folders."""
    store = open_store(runs)
    rows = [store.resolve_run(ref) for ref in run_refs]
    for row in rows:
        if row["status"] in ("running", "queued"):
            raise UserError(f"run {row['id']} is {row['status']}: stop it first (`rrdtui stop {row['id']}`)")
    names = ", ".join(f"{r['id']} ({r['name']})" for r in rows)
    folders = "its folder" if len(rows) == 1 else "their folders"
    kept = teacher_warning(store, rows, force)
    if kept:
        typer.echo(kept, err=True)
    if not yes and not typer.confirm(f"Remove {names} and {folders}?"):
        raise typer.Exit(1)
    for row in rows:
        store.delete_run(row["id"])
        run_dir = Path(row["run_dir"])
        if run_dir.is_dir() and run_dir.resolve().parent == store.runs_dir.resolve():
            shutil.rmtree(run_dir)
        typer.echo(f"removed {row['id']}")


def teacher_warning(store: Store, rows: list[dict], force: bool) -> str:
    """What removing teacher runs means for their students (a line to show), or UserError when a
    student still needs the teacher's folder (it has not started: no link to the weights of its own)."""
    from rrdtui.store import TEACHER_FILE

    removing = {r["id"] for r in rows}
    lines = []
    for row in rows:
        students = [s for s in store.students_of(row["id"]) if s["id"] not in removing]
        if not students:
            continue
        stranded = [s["id"] for s in students if not (Path(s["run_dir"]) / TEACHER_FILE).is_file()]
        if stranded and not force:
            raise UserError(
                f"run {row['id']} is the teacher of {', '.join(stranded)}, which have not kept its weights yet: "
                "remove them too, wait until they start, or add --force (they then need a new teacher)"
            )
        ids = ", ".join(s["id"] for s in students)
        lines.append(
            f"run {row['id']} is the teacher of {ids}: their folders keep a link to its weights, so they stay resumable"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# presets, plot
# ---------------------------------------------------------------------------------------------


@app.command()
@user_errors
def presets(
    folder: Annotated[
        Optional[Path],
        typer.Option("--dir", help="Only this folder (default: ./presets, $RRDTUI_PRESETS, then those installed)."),
    ] = None,
) -> None:
    """List the presets, one line each: what `rrdtui run NAME` finds."""
    from rrdtui.presets import describe_presets, preset_folders

    for line in describe_presets([folder] if folder is not None else preset_folders()):
        typer.echo(line)


@app.command()
@user_errors
def methods(
    as_json: Annotated[bool, typer.Option("--json", help="Every field of every method, as a JSON list.")] = False,
) -> None:
    """List the distillation methods: default weights (gamma/alpha/beta), features, paper."""
    from dataclasses import asdict

    from rrdtui.registry import RegistryError, methods as registered, short_citation, weights_text

    try:
        infos = list(registered().values())
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps([asdict(info) for info in infos], indent=2))
        return
    rows = [(i.name, weights_text(i.weights), ",".join(i.features) or "-", short_citation(i.paper)) for i in infos]
    header = ("method", "γ/α/β", "features", "paper")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(3)]
    from rrdtui.columns import cut_text, terminal_columns

    width = max(80, terminal_columns())
    for row in [header, *rows]:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  "
        typer.echo((head + cut_text(row[3], width - len(head), words=True)).rstrip())


@app.command()
@user_errors
def plot(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN", help="Run ids (or unique prefixes of them).")],
    metric: Annotated[Optional[str], typer.Option("--metric", "-m", help="Metric name (default val/acc).")] = None,
    runs: RunsOption = None,
) -> None:
    """Draw runs' curves in the terminal (plotext), for scripts and quick looks."""
    from rrdtui.plotting import plot_runs

    width, height = shutil.get_terminal_size((100, 30))
    typer.echo(plot_runs(open_store(runs, write=False), run_refs, metric, width=width, height=max(15, height - 4)))


@app.command()
@user_errors
def transfer(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="A completed run id (or a unique prefix).")],
    data: Annotated[str, typer.Option("--data", help="stl10 or tiny_imagenet.")],
    set_: SetOption = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; print the run id.")] = False,
    runs: RunsOption = None,
) -> None:
    """Linear-probe a run's frozen backbone on STL-10 or Tiny-ImageNet (the paper's transfer test)."""
    from rrdtui.transfer import start_transfer

    store = open_store(runs)
    ids, proc = start_transfer(store, run_ref, data, set_ or [], detach=detach)
    if detach:
        announce_detached(store, ids)
        return
    follow_to_end(store, ids, proc)


@app.command()
@user_errors
def bench(
    preset: PresetArgument,
    device: Annotated[
        Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: the preset's).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per loop.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps before timing, per loop.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line.")] = False,
    set_: SetOption = None,
) -> None:
    """Measure training throughput (synthetic data, random teacher): our step against a reference loop."""
    import subprocess

    from rrdtui.config import load_preset
    from rrdtui.presets import resolve_preset

    preset = str(resolve_preset(preset))
    load_preset(preset, set_ or [])  # a bad preset or override: one line, before torch loads
    if device is not None and not (device in ("cpu", "cuda") or device.startswith("cuda:")):
        raise UserError(f"--device must be cpu, cuda or cuda:N, got '{device}'")
    if steps < 1 or warmup < 1:
        raise UserError("--steps and --warmup must be at least 1")
    cmd = [sys.executable, "-m", "rrdtui.train.bench", str(preset), "--steps", str(steps), "--warmup", str(warmup)]
    cmd += ["--device", device] if device else []
    cmd += ["--json"] if as_json else []
    cmd += [f"--set={override}" for override in set_ or []]
    # The benchmark's output passes through line by line; its exit code is ours.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            typer.echo(line, nl=False)
    except KeyboardInterrupt:
        proc.terminate()
    raise typer.Exit(proc.wait())


# ---------------------------------------------------------------------------------------------
# studies: study, studies, table (stop STUDY is in `stop`)
# ---------------------------------------------------------------------------------------------


@app.command()
@user_errors
def study(
    study_file: Annotated[str, typer.Argument(metavar="STUDY_FILE", help="A study file (presets/studies/*.yaml) or a shipped study's name.")],
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", metavar="KEY=VALUE", help="Override a key in every run of the study (repeatable)."),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run the study in the background; print its name.")] = False,
    slots: Annotated[Optional[int], typer.Option("--slots", help="Runs at once (default: devices x per-device, or 1 on the CPU).")] = None,
    devices: Annotated[Optional[str], typer.Option("--devices", metavar="0,1,...", help="CUDA devices to place runs on (default: none, the CPU or the trainer's choice).")] = None,
    per_device: Annotated[int, typer.Option("--per-device", help="Runs packed on one GPU at most.")] = 1,
    runs: RunsOption = None,
) -> None:
    """Run a study: every combination of its grid, for each seed. Re-run it to continue: completed runs
    are kept, stopped or crashed ones resumed, missing ones started."""
    from rrdtui.studies.runner import TEACHER_ROLE, Runner, install_signals, placement, prepare, spawn_runner
    from rrdtui.studies.spec import load_study

    spec = load_study(study_file, set_ or [])
    place = placement(slots, devices, per_device)
    store = open_store(runs)
    created, resumed = prepare(store, spec)
    rows = store.study_runs(spec.name)
    members = [r for r in rows if r["study_point"] != TEACHER_ROLE]
    done = sum(r["status"] == "completed" for r in members)
    teachers = len(rows) - len(members)
    typer.echo(
        f"study {spec.name}: {len(spec.points)} runs ({done} completed, {len(resumed)} to resume, "
        f"{sum(r['id'] in created for r in members)} new)" + (f" and {teachers} teacher run{'s' if teachers > 1 else ''}" if teachers else "")
        + f", {place.slots} at a time",
        err=detach,
    )
    if not created and not resumed and not any(r["status"] in ("queued", "running") for r in rows):
        typer.echo(f"nothing to do: see `rrdtui table {spec.name}`", err=detach)
        if detach:
            typer.echo(spec.name)
        return
    if detach:
        spawn_runner(store, spec.name, place)
        typer.echo(f"log: {store.study_dir(spec.name) / 'runner.log'}", err=True)
        typer.echo(spec.name)
        return
    runner = Runner(store, spec.name, place, say=lambda line: typer.echo(f"{time.strftime('%H:%M:%S')} {line}"))
    install_signals(runner)
    status = runner.run()
    left = [r for r in store.study_runs(spec.name) if r["status"] in ("stopped", "crashed")]
    if left:
        typer.echo(f"{len(left)} runs left unfinished: continue the study with `rrdtui study {study_file}`")
    typer.echo(f"see `rrdtui table {spec.name}`")
    if status:
        raise typer.Exit(1)


@app.command()
@user_errors
def studies(
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    runs: RunsOption = None,
) -> None:
    """List the studies in the store with their progress."""
    store = open_store(runs, write=False)
    out = []
    for row in store.list_studies():
        counts: dict[str, int] = {}
        for run_row in store.study_runs(row["name"]):
            counts[run_row["status"]] = counts.get(run_row["status"], 0) + 1
        running = store.study_runner_alive(row)
        out.append({"name": row["name"], "file": row["file"], "runner": "running" if running else "idle", "runs": counts})
    if json_:
        typer.echo(json.dumps(out, indent=2))
        return
    if not out:
        typer.echo("no studies yet: `rrdtui study presets/studies/demo.yaml`")
        return
    for entry in out:
        counts = entry["runs"]
        tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        typer.echo(f"{entry['name']:<20s} {entry['runner']:<7s} {sum(counts.values()):>4d} runs: {tally}")


@app.command("table")
@user_errors
def table_command(
    study: Annotated[str, typer.Argument(metavar="STUDY", help="A study's name (see `rrdtui studies`).")],
    fmt: Annotated[str, typer.Option("--format", help="text, markdown, csv, json or latex.")] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
    runs: RunsOption = None,
) -> None:
    """A study's results: one row per seed group (mean, std), the paper's numbers, relative improvement over KD."""
    from rrdtui.studies.table import FORMATS, render, study_table

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if output is not None:
        check_output_file(output, f"{study}.{fmt}")
    text = render(study_table(open_store(runs, write=False), study), fmt)
    if output is not None:
        write_file_atomic(output, text)
    else:
        typer.echo(text, nl=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
