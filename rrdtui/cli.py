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
from typing import Annotated, Optional

import typer

from rrdtui.config import ConfigError
from rrdtui.store import Store, StoreError, default_runs_dir, store_writable

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


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def user_errors(fn):
    """Turn the known error types into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, StoreError, UserError) as exc:
            typer.echo(f"rrdtui: error: {exc}", err=True)
            raise typer.Exit(2) from None
        except sqlite3.OperationalError as exc:  # a write to a store opened read-only
            if "readonly" not in str(exc):
                raise
            typer.echo(f"rrdtui: error: the run store is read-only ({exc}): choose a writable folder with --runs", err=True)
            raise typer.Exit(2) from None

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
    return default_runs_dir()


def open_store(runs: Path | None, write: bool = True) -> Store:
    """The store for a command. Commands that only read (`write=False`) open a store they cannot
    write read-only; the others are refused one, in one line, before they do anything."""
    folder = runs_dir(runs)
    return Store(folder, readonly=not write and not store_writable(folder))


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
    preset: Annotated[Path, typer.Argument(help="A preset file, e.g. presets/demo.yaml.")],
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a key: --set method.tau_s=0.05 (repeatable).")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; print the run id.")] = False,
    runs: RunsOption = None,
) -> None:
    """Train a preset (its teacher first, when the store has none), with a progress bar."""
    from rrdtui.config import load_preset
    from rrdtui.launcher import create_runs, plan_runs, spawn_worker

    cfg = load_preset(preset, set_ or [])
    store = open_store(runs)
    plan = plan_runs(cfg, str(preset), store)
    from rrdtui.preflight import preflight

    preflight(plan)  # missing data or an unusable teacher file: one line now, no run row written
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
        if row.get("teacher_acc") is not None:
            line += f"  (teacher {row['teacher_acc']:.2f})"
        typer.echo(line)
        if row.get("error"):
            typer.echo(f"         {row['error']}")
    typer.echo(f"\nRuns are in {store.runs_dir}/ (store {store.path}; each run's folder holds its log and checkpoints).")
    typer.echo(f"Details: rrdtui show {rows[-1]['id']}    Dashboard: uv run rrdtui")


# ---------------------------------------------------------------------------------------------
# ls, show, export
# ---------------------------------------------------------------------------------------------


def run_summary(store: Store, row: dict) -> dict:
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
        "config": config,
    }


@app.command("ls")
@user_errors
def list_runs(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list of runs.")] = False,
    runs: RunsOption = None,
) -> None:
    """List runs, newest first."""
    store = open_store(runs, write=False)
    rows = store.list_runs()
    if as_json:
        out = []
        for row in rows:
            summary = run_summary(store, row)
            summary.pop("config")
            out.append(summary)
        typer.echo(json.dumps(out, indent=2))
        return
    if not rows:
        typer.echo(f"no runs in {store.path}: start one with `rrdtui run presets/demo.yaml`")
        return
    typer.echo(f"{'id':8s}  {'name':<22s} {'method':<7s} {'teacher -> student':<26s} {'status':<10s} {'epoch':>9s} {'val/acc':>7s} {'best':>6s}  started")
    for row in rows:
        latest = store.latest(row["id"])
        pair = f"{row['teacher_arch'] or '-'} -> {row['student_arch']}" if row["kind"] != "train" else row["student_arch"]
        typer.echo(
            f"{row['id']:8s}  {row['name'][:22]:<22s} {row['method']:<7s} {pair[:26]:<26s} {row['status']:<10s} "
            f"{row['epoch']:>4d}/{row['epochs']:<4d} {fmt_acc(latest.get('val/acc')):>7s} {fmt_acc(row.get('best_acc')):>6s}  "
            f"{fmt_time(row.get('started'))}"
        )


@app.command()
@user_errors
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="A run id or a unique prefix of one.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as one JSON object.")] = False,
    runs: RunsOption = None,
) -> None:
    """Show one run: status, latest metrics, configuration, events."""
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
    if row.get("teacher_acc") is not None:
        typer.echo(f"  teacher accuracy (measured): {row['teacher_acc']:.2f}%")
    if summary["paper"]:
        typer.echo("  paper: " + ", ".join(f"{k} {v}" for k, v in summary["paper"].items()))
    if row.get("error"):
        typer.echo(f"  error: {row['error']}")
    typer.echo("  latest metrics:")
    for name, value in sorted(summary["metrics"].items()):
        typer.echo(f"    {name:<22s} {value:.4f}")
    method = summary["config"].get("method", {})
    typer.echo(
        "  method: " + ", ".join(f"{k}={method[k]}" for k in ("gamma", "alpha", "beta", "kd_T", "tau_s", "tau_t") if k in method)
    )


@app.command()
@user_errors
def export(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN...", help="One or more run ids (or prefixes).")],
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
    runs: RunsOption = None,
) -> None:
    """Export runs' metric histories: rows of run_id, name, step, epoch, value, time."""
    if fmt not in ("csv", "json"):
        raise UserError(f"--format must be csv or json, got '{fmt}'")
    if output is not None:
        check_output_file(output, f"metrics.{fmt}")
    store = open_store(runs, write=False)
    rows = []
    for ref in run_refs:
        rows.extend(store.all_metrics(store.resolve_run(ref)["id"]))
    handle = io.StringIO(newline="") if output else sys.stdout
    if fmt == "json":
        json.dump(rows, handle, indent=1)
        handle.write("\n")
    else:
        writer = csv.DictWriter(handle, fieldnames=["run_id", "name", "step", "epoch", "value", "time"])
        writer.writeheader()
        writer.writerows(rows)
    if output:
        write_file_atomic(output, handle.getvalue())


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
# stop, resume, logs, rm
# ---------------------------------------------------------------------------------------------


@app.command()
@user_errors
def stop(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    runs: RunsOption = None,
) -> None:
    """Stop a running run cleanly: it finishes its step, writes a checkpoint and ends as stopped."""
    from rrdtui.launcher import request_stop

    run_id = request_stop(open_store(runs), run_ref)
    typer.echo(f"stop requested for {run_id}; resume later with `rrdtui resume {run_id}`")


@app.command()
@user_errors
def resume(
    run_ref: Annotated[str, typer.Argument(metavar="RUN")],
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    runs: RunsOption = None,
) -> None:
    """Continue a stopped, crashed or failed run from its last checkpoint to its configured end."""
    from rrdtui.launcher import resume as resume_runs

    store = open_store(runs)
    ids, proc = resume_runs(store, run_ref, detach=detach)
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
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN...")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    runs: RunsOption = None,
) -> None:
    """Remove finished runs: their rows, metrics and folders."""
    store = open_store(runs)
    rows = [store.resolve_run(ref) for ref in run_refs]
    for row in rows:
        if row["status"] in ("running", "queued"):
            raise UserError(f"run {row['id']} is {row['status']}: stop it first (`rrdtui stop {row['id']}`)")
    names = ", ".join(f"{r['id']} ({r['name']})" for r in rows)
    if not yes and not typer.confirm(f"Remove {names} and their folders?"):
        raise typer.Exit(1)
    for row in rows:
        store.delete_run(row["id"])
        run_dir = Path(row["run_dir"])
        if run_dir.is_dir() and run_dir.resolve().parent == store.runs_dir.resolve():
            shutil.rmtree(run_dir)
        typer.echo(f"removed {row['id']}")


# ---------------------------------------------------------------------------------------------
# presets, plot
# ---------------------------------------------------------------------------------------------


@app.command()
@user_errors
def presets(
    folder: Annotated[
        Optional[Path], typer.Option("--dir", help="The presets folder (default ./presets, else those installed).")
    ] = None,
) -> None:
    """List the presets, one line each."""
    from rrdtui.presets import describe_presets, presets_dir

    for line in describe_presets(folder if folder is not None else presets_dir()):
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
    width = max(80, shutil.get_terminal_size((80, 24)).columns)
    for row in [header, *rows]:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  "
        typer.echo((head + cut_words(row[3], width - len(head))).rstrip())


def cut_words(text: str, room: int) -> str:
    """`text` in `room` columns: whole words and an ellipsis (no dangling "(arXiv"), else cut anywhere."""
    if len(text) <= room:
        return text
    words = text.split(" ")
    while len(words) > 1 and (len(" ".join(words)) + 2 > room or words[-1].startswith("(")):
        words.pop()
    out = " ".join(words) + " …"
    return out if len(out) <= room else text[: max(0, room - 1)] + "…"


@app.command()
@user_errors
def plot(
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN...")],
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
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a key: --set train.epochs=30 (repeatable).")
    ] = None,
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
    preset: Annotated[Path, typer.Argument(help="A preset file, e.g. presets/demo.yaml.")],
    device: Annotated[
        Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: the preset's).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per loop.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps before timing, per loop.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line.")] = False,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a key: --set method.name=kd (repeatable).")
    ] = None,
) -> None:
    """Measure training throughput (synthetic data, random teacher): our step against a reference loop."""
    import subprocess

    from rrdtui.config import load_preset

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
