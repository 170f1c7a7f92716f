"""Start, stop and resume trainer processes. No torch here: the trainer is a process, never an import.

A launch resolves the preset's teacher first: a checkpoint file, a completed run, or a teacher preset
whose completed run the store already holds (same configuration fingerprint). When a teacher preset
has no completed run, the plan trains it first, as a run of its own, in the same trainer process.

A run of several processes (train.nproc, train.nnodes) is started under torchrun (PyTorch's
launcher, `python -m torch.distributed.run`), which starts the worker once per process, ends them all
when any dies, and forwards Ctrl-C and SIGTERM to them. On several nodes, this launch is the node
that owns the run; the others join it with the command `join_command` gives (README, "Several GPUs
and several nodes").
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rrdtui.config import Config, ConfigError, from_mapping, load_preset, validate
from rrdtui.store import Store, StoreError

# The c10d rendezvous's name. The endpoint (train.rdzv_endpoint) already tells runs apart: a port
# serves one run at a time.
RDZV_ID = "rrdtui"


@dataclass
class PlannedRun:
    config: Config
    preset: str
    teacher_ref: str | None = None
    teacher_run: str | None = None  # an existing completed run, or None
    teacher_index: int | None = None  # position in the plan of a teacher trained first


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the CLI says before it starts


def plan_runs(cfg: Config, preset: str, store: Store, depth: int = 0) -> Plan:
    """Resolve cfg's teacher into a list of runs to create, teachers first. Raises ConfigError."""
    if depth > 4:
        raise ConfigError(f"{preset}: teacher presets nest more than 4 deep (a cycle?)")
    plan = Plan()
    if depth == 0 and cfg.train.nnodes > 1:
        train = cfg.to_dict()["train"]
        plan.notes.append(f"this node is 1 of {cfg.train.nnodes}; start each other node with: {join_command(train)}")
    run = PlannedRun(config=cfg, preset=preset)
    teacher = cfg.teacher
    if not cfg.distills:
        plan.runs.append(run)
        return plan

    if teacher.checkpoint:
        path = Path(teacher.checkpoint).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{preset}: teacher.checkpoint '{teacher.checkpoint}' not found: give the path of a .pth file"
            )
        teacher.checkpoint = str(path.resolve())
        run.teacher_ref = f"checkpoint:{teacher.checkpoint}"
        plan.notes.append(f"teacher: {teacher.arch} from {teacher.checkpoint}")
    elif teacher.run:
        try:
            row = store.resolve_run(teacher.run)
        except StoreError as exc:
            raise ConfigError(f"{preset}: teacher.run: {exc}") from None
        if row["status"] != "completed":
            raise ConfigError(f"{preset}: teacher.run {row['id']} is {row['status']}, not completed")
        _adopt_arch(cfg, row["student_arch"], preset)
        run.teacher_run = row["id"]
        run.teacher_ref = f"run:{row['id']}"
        plan.notes.append(f"teacher: run {row['id']} ({row['name']}, {row['student_arch']}, {_acc(row)})")
    else:
        teacher_cfg = load_preset(teacher.preset)
        if teacher_cfg.data.name != cfg.data.name:
            raise ConfigError(
                f"{preset}: teacher.preset trains on '{teacher_cfg.data.name}' but this preset uses "
                f"'{cfg.data.name}': use a teacher of the same data set"
            )
        _adopt_arch(cfg, teacher_cfg.student.arch, preset)
        run.teacher_ref = f"preset:{teacher.preset}"
        done = store.find_completed(teacher_cfg.to_dict())
        active = None if done else store.find_active(teacher_cfg.to_dict())
        if done:
            run.teacher_run = done["id"]
            plan.notes.append(f"teacher: {teacher_cfg.name} reused from run {done['id']} ({_acc(done)})")
        elif active:
            # Being trained right now (another seed of a loop, a study): claimed, not trained twice.
            run.teacher_run = active["id"]
            plan.notes.append(
                f"teacher: {teacher_cfg.name} is being trained by run {active['id']}: the student waits for it"
            )
        else:
            # Trained first by the same trainer, so on the same processes: they are the student's.
            for key in ("nproc", "nnodes", "rdzv_endpoint"):
                setattr(teacher_cfg.train, key, getattr(cfg.train, key))
            try:
                validate(teacher_cfg)
            except ConfigError as exc:
                raise ConfigError(f"{teacher.preset}, trained first with this preset's processes: {exc}") from None
            sub = plan_runs(teacher_cfg, teacher.preset, store, depth + 1)
            plan.runs.extend(sub.runs)
            plan.notes.extend(sub.notes)
            run.teacher_index = len(plan.runs) - 1
            plan.notes.append(f"teacher: {teacher_cfg.name} has no completed run: training it first")
    plan.runs.append(run)
    return plan


def _adopt_arch(cfg: Config, arch: str, preset: str) -> None:
    if cfg.teacher.arch and cfg.teacher.arch != arch:
        raise ConfigError(f"{preset}: teacher.arch is '{cfg.teacher.arch}' but the teacher it names is a '{arch}'")
    cfg.teacher.arch = arch


def _acc(row: dict) -> str:
    return f"{row['best_acc']:.2f}% best val/acc" if row.get("best_acc") is not None else "no accuracy yet"


def teacher_plan(cfg: Config, store: Store, preset: str = "preset") -> str:
    """One line saying which teacher a preset will use (for the dashboard's launch form)."""
    if not cfg.distills:
        return "no teacher: plain cross-entropy training"
    plan = plan_runs(cfg, preset, store)
    return "; ".join(n for n in plan.notes if n.startswith("teacher"))


def create_runs(plan: Plan, store: Store) -> list[str]:
    """Insert the plan's rows (queued), teachers first; return their ids in training order."""
    ids: list[str] = []
    for run in plan.runs:
        teacher_run = run.teacher_run
        if run.teacher_index is not None:
            teacher_run = ids[run.teacher_index]
        ids.append(
            store.create_run(
                run.config.to_dict(),
                preset=run.preset,
                config_hash=run.config.fingerprint(),
                teacher_ref=run.teacher_ref,
                teacher_run=teacher_run,
            )
        )
    return ids


def torchrun_args(train: dict) -> list[str]:
    """torchrun's arguments (after `python`) for a resolved configuration's train section; none for
    one process: the worker runs alone, as it always did."""
    nproc, nnodes = train.get("nproc", 1), train.get("nnodes", 1)
    if nproc == 1 and nnodes == 1:
        return []
    args = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if nnodes == 1:
        return args + ["--standalone"]  # a rendezvous on this machine, on a free port
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", train["rdzv_endpoint"], "--rdzv-id", RDZV_ID]
    return args + ["--nnodes", str(nnodes), *rendezvous]


def join_command(train: dict) -> str:
    """What each other node of a run of train.nnodes nodes runs, in the folder of its rrdtui (it needs
    its own copy of the data set, and no store: rank 0 sends it everything else)."""
    return shlex.join(["python", *torchrun_args(train), "-m", "rrdtui.train.worker", "--join"])


def _ignore_hangup() -> None:
    # torchrun is told to leave SIGHUP alone (TORCHELASTIC_SIGNALS_TO_HANDLE): ignored, it is inherited
    # by its processes, so a foreground run survives its terminal as a one-process run does.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def spawn_worker(
    store: Store, ids: list[str], detach: bool, resume: bool = False, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start the trainer process for `ids` (queued, owned by this process); its output goes to the last
    run's train.log.

    Detached, it gets its own session (no terminal, no SIGHUP, no Ctrl-C), so closing the terminal
    or the SSH connection leaves it running. In the foreground it shares the terminal's process
    group, so Ctrl-C reaches it and it stops cleanly with a checkpoint. A run of several processes
    starts torchrun, which starts the workers (the runs of one trainer share their processes).
    """
    shapes = {tuple(torchrun_args(json.loads(store.get_run(i)["config"])["train"])) for i in ids}
    if len(shapes) > 1:  # plan_runs and resume give a trainer's runs the same processes
        raise ConfigError(f"runs {', '.join(ids)} ask for different numbers of processes: start them apart")
    torchrun = list(shapes.pop())
    cmd = [sys.executable, *torchrun, "-m", "rrdtui.train.worker", "--runs", str(store.runs_dir.resolve())]
    if resume:
        cmd.append("--resume")
    cmd.extend(ids)
    extra = {}
    if torchrun:
        extra["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGTERM,SIGINT,SIGQUIT"
        if "OMP_NUM_THREADS" not in os.environ:  # else torchrun sets 1: the cores shared among processes
            nproc = int(torchrun[torchrun.index("--nproc-per-node") + 1])
            extra["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    log_path = store.run_dir(ids[-1]) / "train.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
            close_fds=True,
            env={**os.environ, **extra, **(env or {}), "PYTHONUNBUFFERED": "1"},
            preexec_fn=_ignore_hangup if torchrun else None,
        )
    # The queued rows now belong to the trainer: it takes each run's lock when it starts it.
    store.hand_over(ids, proc.pid)
    return proc


def launch(preset_path: str, overrides: list[str], runs_dir, detach: bool = True) -> list[str]:
    """Plan, create and start the runs of a preset; return their ids (the student last)."""
    cfg = load_preset(preset_path, overrides)
    store = Store(runs_dir)
    try:
        plan = plan_runs(cfg, str(preset_path), store)
        from rrdtui.preflight import preflight

        preflight(plan)  # missing data or an unusable teacher file: one line now, no run row written
        ids = create_runs(plan, store)
        spawn_worker(store, ids, detach=detach)
    finally:
        store.close()
    return ids


def request_stop(store: Store, run_id: str) -> str:
    """Ask a running trainer to stop cleanly: a flag in the store plus SIGTERM when it is local.

    A queued run (waiting for its teacher, or for its trainer to start) is cancelled alone, by a
    compare-and-set: if its trainer started it meanwhile, the stop goes to the running trainer.
    """
    row = store.resolve_run(run_id)
    if row["status"] not in ("running", "queued"):
        raise StoreError(f"run {row['id']} is {row['status']}, not running")
    if row["status"] == "queued" and store.cancel_queued(row["id"]):
        store.event(row["id"], "info", "stopped before it started")
        return row["id"]
    row = store.get_run(row["id"])
    store.update_run(row["id"], stop_requested=1)
    if row["status"] == "running" and row.get("pid") and row.get("host") == socket.gethostname():
        try:
            os.kill(row["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    store.event(row["id"], "info", "stop requested")
    return row["id"]


def resume_chain(store: Store, run_id: str) -> list[str]:
    """The runs a resume must train, in order: an unfinished teacher of ours first, then the run."""
    row = store.resolve_run(run_id)
    chain = [row["id"]]
    if row.get("teacher_run"):
        teacher = store.get_run(row["teacher_run"])
        if teacher and teacher["status"] != "completed":
            chain = resume_chain(store, teacher["id"]) + chain
    return chain


def resume(
    store: Store, run_id: str, detach: bool = True, nproc: int | None = None
) -> tuple[list[str], subprocess.Popen]:
    """Claim the run (and an unfinished teacher of ours) and start one trainer for them.

    The claim is one compare-and-set on the rows: of two resumes at the same moment, one gets the
    runs and the other a one-line StoreError naming the process that has them.

    A run resumes on the processes it had (its train.nproc): the trainer refuses another number.
    `nproc` asks for another on purpose (each process then holds another share of the same global
    batch; the step is the same): checked like a preset (ConfigError) and recorded in the runs.
    """
    ids = resume_chain(store, run_id)
    changed = {}
    for i in ids if nproc is not None else []:
        config = json.loads(store.get_run(i)["config"])
        if config["train"].get("nproc", 1) != nproc:
            config["train"]["nproc"] = nproc
            from_mapping(config, f"rrdtui resume {i} with {nproc} processes")  # ConfigError: nothing written
            changed[i] = config
    store.claim(ids)
    for i, config in changed.items():
        store.update_run(i, config=json.dumps(config))
        store.event(i, "info", f"resumed with train.nproc {nproc}, as asked")
    return ids, spawn_worker(store, ids, detach=detach, resume=True)
