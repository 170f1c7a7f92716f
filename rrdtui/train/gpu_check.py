"""The GPU check: every measurement the GPU owes, in one prepared run (scripts/gpu_check.sh).

    python -m rrdtui.train.gpu_check OUTDIR [--dry-run] [--budget SECONDS] [--parts bench,modes,...]

On one H100 or H200 its rows finish within --budget (default 450 s: with its start, the command
stays under 8 minutes). It writes OUTDIR/gpu_check.json and OUTDIR/gpu_check.md, both rewritten
after every row (a check cut short keeps what it measured), and each row's output in OUTDIR/logs/.
The parts:

- bench: `rrdtui bench` (python -m rrdtui.train.bench) of our loop against the reference loop, for
  cifar_wrn with RRD, KD and CRD, and resnet32x4 -> resnet8x4 with RRD;
- modes: cifar_wrn RRD, our loop alone: eager, train.compile, train.compile in torch.compile's
  reduce-overhead mode, and train.cuda_graphs (the whole step as one CUDA graph);
- packed: 1, 2, 4 and 8 cifar_wrn RRD trainers at once on the one GPU, each a process timed over
  the same wall-clock window; their images/s summed;
- fidelity: a teacher (the demo's resnet14) trained on the synthetic data, its soft targets at
  T = 4 in bf16 and in fp32 (mean KL, top-1 agreement), and one student trained with each teacher
  precision (train.teacher_dtype) from the same seed, plus an fp32 repeat for the noise floor;
- demo: the demo through the real CLI on a temporary store: a 2-epoch run ending completed, and a
  second run (the demo's own 6 epochs, so that a stop can land while it trains even on a fast GPU)
  stopped with `rrdtui stop` while it trains and finished with `rrdtui resume`.

Every row runs guarded, most in a subprocess with a time limit, so one failure (or a hung compile)
loses nothing else: each row says ok, failed (and why) or skipped (and why), and the JSON's
`failed` lists every failure. Rows run most-wanted first; when the budget runs out, the rest are
skipped, saying so. --dry-run runs every part on the CPU with tiny step counts (what the test suite
runs); the CUDA-only rows are skipped there with the reason. Needs torch, torchvision, pyyaml,
typer, rich and sqlite-utils; never textual.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __name__ == "__main__":
    # As in the benchmark: OpenMP threads that wait passively, so the CPU dry run's concurrent
    # trainers do not spin against each other. Set before torch loads; inherited by the children.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "presets"
PARTS = {
    "bench": "`rrdtui bench`: ours against the reference loop",
    "modes": "Step modes, cifar_wrn RRD (our loop alone): eager, train.compile, CUDA graphs",
    "packed": "Trainers packed on one GPU (cifar_wrn RRD)",
    "fidelity": "bf16 fidelity of the teacher (train.teacher_dtype)",
    "demo": "The demo through the CLI: a 2-epoch run, and a stop and resume",
}
MIN_ROW_S = 20  # a row is not started with less of the budget left than this


@dataclass(frozen=True)
class Plan:
    """Step counts and time limits (seconds) of one check: the GPU's, or the CPU dry run's."""

    device: str
    budget_s: float
    bench_steps: int
    bench_warmup: int
    overrides: tuple[str, ...]  # for every bench, mode and packed row (the dry run's smaller batch)
    bench_timeout: float
    modes_steps: int
    compile_timeout: float
    packed_counts: tuple[int, ...]
    packed_seconds: float
    packed_timeout: float
    fidelity_data: tuple[str, ...]  # overrides of the fidelity part's synthetic data
    teacher_epochs: int
    student_epochs: int
    fidelity_timeout: float
    demo_timeout: float


GPU = Plan(
    device="cuda", budget_s=450, bench_steps=200, bench_warmup=20, overrides=(), bench_timeout=100,
    modes_steps=300, compile_timeout=150, packed_counts=(1, 2, 4, 8), packed_seconds=10, packed_timeout=120,
    fidelity_data=(), teacher_epochs=10, student_epochs=6, fidelity_timeout=240, demo_timeout=150,
)  # fmt: skip
DRY_RUN = Plan(
    device="cpu", budget_s=1500, bench_steps=2, bench_warmup=1,
    overrides=("train.batch_size=16", "method.queue_size=256", "method.crd_negatives=256"), bench_timeout=300,
    modes_steps=2, compile_timeout=300, packed_counts=(1, 2), packed_seconds=1, packed_timeout=300,
    fidelity_data=("data.train_size=256", "data.val_size=128", "data.probe_size=64", "method.queue_size=128"),
    teacher_epochs=1, student_epochs=1, fidelity_timeout=400, demo_timeout=400,
)  # fmt: skip


class RowFailed(Exception):
    """A row that did not produce its figures; the message says why, in one line."""


# ---------------------------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of every child: this checkout first on the path (the GPU machine has rrdtui
    only as this folder), unbuffered output."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), "PYTHONUNBUFFERED": "1"}


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    # Its own session: a time limit kills it with everything it started (DataLoader workers, a
    # foreground trainer).
    return subprocess.Popen(
        cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def finish(proc: subprocess.Popen, timeout: float, log: Path) -> str:
    """Wait for proc (killed past timeout); its stdout. Its output goes to log; RowFailed unless it
    exited with 0."""
    try:
        out, err = proc.communicate(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        kill(proc)
        out, err = proc.communicate()
        log.write_text(f"{out}\n--- stderr ---\n{err}")
        raise RowFailed(f"timed out after {timeout:.0f} s") from None
    log.write_text(f"{out}\n--- stderr ---\n{err}")
    if proc.returncode != 0:
        raise RowFailed(f"exit code {proc.returncode}: {last_line(err) or last_line(out) or 'no output'}")
    return out


def json_result(out: str) -> dict:
    """The last line of a child's stdout that is a JSON object."""
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise RowFailed(f"no JSON line in the output ({last_line(out) or 'empty'})")


# ---------------------------------------------------------------------------------------------
# The check: rows, parts, the files
# ---------------------------------------------------------------------------------------------


class Check:
    def __init__(self, out: Path, plan: Plan, dry_run: bool, budget_s: float):
        self.out, self.plan, self.dry_run = out, plan, dry_run
        self.logs = out / "logs"
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        # Stores, checkpoints, synthetic data: a temporary folder, so OUTDIR holds the results only.
        self.work = Path(tempfile.mkdtemp(prefix="rrdtui-gpu-check-"))
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.lock = threading.Lock()  # the fidelity rows record from a thread of their own
        self.cuda = torch.cuda.is_available()
        self.result: dict = {
            "check": "rrdtui gpu_check",
            "dry_run": dry_run,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "budget_s": budget_s,
            "machine": machine(),
            "parts": {
                name: {"title": title, "status": "skipped", "reason": "not run", "rows": []} for name, title in PARTS.items()
            },
            "failed": [],
        }  # fmt: skip
        self.write()

    # -- rows ------------------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def row(
        self, part: str, name: str, fn: Callable[[float], dict], timeout: float, skip: str | None = None, **info
    ) -> dict | None:
        """Run fn(time limit) guarded and record its row; its figures, or None."""
        entry = {"name": name, **info}
        limit = min(timeout, self.remaining())
        if skip is None and limit < MIN_ROW_S:
            skip = f"the check's time budget ({self.result['budget_s']:.0f} s) ran out"
        if skip is not None:
            entry.update(status="skipped", reason=skip)
        else:
            began = time.monotonic()
            try:
                entry.update(status="ok", figures=fn(limit))
            except RowFailed as exc:
                entry.update(status="failed", reason=str(exc))
            except Exception as exc:  # a bug or a surprise: recorded, and the check goes on
                entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            entry["seconds"] = round(time.monotonic() - began, 1)
        self.record(part, entry)
        return entry.get("figures")

    def record(self, part: str, entry: dict) -> None:
        with self.lock:
            section = self.result["parts"][part]
            section["rows"].append(entry)
            rows = section["rows"]
            failed = [r for r in rows if r["status"] == "failed"]
            section["status"] = "failed" if failed else "ok" if any(r["status"] == "ok" for r in rows) else "skipped"
            section["reason"] = "; ".join(f"{r['name']}: {r['reason']}" for r in rows if r["status"] != "ok") or None
            if entry["status"] == "failed":
                self.result["failed"].append(f"{part} / {entry['name']}: {entry['reason']}")
            self.write()

    def write(self) -> None:
        self.result["seconds"] = round(time.monotonic() - self.started, 1)
        for name, text in (("gpu_check.json", json.dumps(self.result, indent=1)), ("gpu_check.md", markdown(self.result))):
            # Written whole, then renamed: a reader never sees half a file.
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text + "\n")
            tmp.replace(self.out / name)

    def shown(self, cmd: list[str]) -> str:
        return shown(cmd, self.work)

    def log(self, name: str) -> Path:
        return self.logs / f"{name.replace(' ', '_').replace('/', '_').replace('>', '')}.log"

    # -- the parts, most wanted first ------------------------------------------------------------

    def run(self, parts: set[str]) -> None:
        for name in PARTS:
            if name not in parts:
                self.result["parts"][name]["reason"] = "not asked for (--parts)"
        if "bench" in parts:
            self.bench()
        if "modes" in parts:
            self.modes(("eager", "cuda_graphs"))
        if "packed" in parts:
            self.packed()
        # Neither measures speed: the fidelity trainings and the demo share the GPU at once.
        thread = threading.Thread(target=self.fidelity) if "fidelity" in parts else None
        if thread:
            thread.start()
        if "demo" in parts:
            self.demo()
        if thread:
            thread.join()
        if "modes" in parts:  # compiling is slow and may hang: last
            self.modes(("compile", "reduce-overhead"))
        shutil.rmtree(self.work, ignore_errors=True)
        self.result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        self.write()

    def bench_command(self, preset: str, sets: tuple[str, ...], steps: int, *extra: str) -> list[str]:
        plan = self.plan
        cmd = [sys.executable, "-m", "rrdtui.train.bench", str(PRESETS / preset), "--device", plan.device, "--json"]
        cmd += ["--steps", str(steps), "--warmup", str(plan.bench_warmup), *extra]
        return cmd + [f"--set={s}" for s in plan.overrides + sets]

    def run_bench(self, name: str, cmd: list[str], limit: float) -> tuple[dict, str]:
        proc = start(cmd, self.work)
        out = finish(proc, limit, self.log(name))
        return json_result(out), self.log(name).read_text()

    def bench(self) -> None:
        rows = [
            ("cifar_wrn RRD", "cifar_wrn.yaml", ()),
            ("cifar_wrn KD", "cifar_wrn.yaml", ("method.name=kd",)),
            ("cifar_wrn CRD", "cifar_wrn.yaml", ("method.name=crd",)),
            ("resnet32x4 -> resnet8x4 RRD", "cifar100_resnet32x4-resnet8x4.yaml", ()),
        ]
        for name, preset, sets in rows:
            cmd = self.bench_command(preset, sets, self.plan.bench_steps)
            self.row("bench", name, lambda limit, n=name, c=cmd: self.run_bench(n, c, limit)[0], self.plan.bench_timeout,
                     command=self.shown(cmd))  # fmt: skip

    def modes(self, which: tuple[str, ...]) -> None:
        variants = {
            "eager": ("eager", (), ()),
            "cuda_graphs": ("CUDA graphs (train.cuda_graphs)", ("train.cuda_graphs=true",), ()),
            "compile": ("train.compile", ("train.compile=true",), ()),
            "reduce-overhead": ("train.compile, reduce-overhead", (), ("--compile-mode", "reduce-overhead")),
        }
        for key in which:
            name, sets, extra = variants[key]
            cmd = self.bench_command("cifar_wrn.yaml", sets, self.plan.modes_steps, "--no-reference", *extra)
            skip = None
            if key in ("cuda_graphs", "reduce-overhead") and self.plan.device != "cuda":
                skip = "no CUDA: CUDA graphs need a GPU" if not self.cuda else "the dry run trains on the CPU"
            elif key in ("compile", "reduce-overhead") and self.dry_run:
                skip = "dry run: compiling takes minutes on the CPU (tests/test_bench.py covers train.compile)"
            timeout = self.plan.compile_timeout if key in ("compile", "reduce-overhead") else self.plan.bench_timeout

            def measure(limit: float, key=key, name=name, cmd=cmd) -> dict:
                result, log = self.run_bench(f"modes {name}", cmd, limit)
                keys = ("fast_img_s", "step_ms", "peak_mem_mb", "cuda_graphs", "compile_mode", "amp", "teacher_dtype", "steps")
                figures = {k: result.get(k) for k in keys}
                eager = result["fast_img_s"] if key == "eager" else self.figure("modes", "eager", "fast_img_s")
                figures["vs_eager"] = result["fast_img_s"] / eager if eager else None
                if key == "cuda_graphs" and result.get("cuda_graphs") != "captured":
                    raise RowFailed(f"the step was not captured: {result.get('cuda_graphs')}")
                if "did not compile" in log:  # the loop's compile fell back to eager (its warning)
                    raise RowFailed(next(line for line in log.splitlines() if "did not compile" in line)[:300])
                return figures

            self.row("modes", name, measure, timeout, skip=skip, command=self.shown(cmd))

    def figure(self, part: str, row: str, key: str):
        for entry in self.result["parts"][part]["rows"]:
            if entry["name"] == row and entry["status"] == "ok":
                return entry["figures"].get(key)
        return None

    def packed(self) -> None:
        plan = self.plan
        for n in plan.packed_counts:
            cmd = [sys.executable, "-m", "rrdtui.train.gpu_check", "--packed-worker", str(PRESETS / "cifar_wrn.yaml"),
                   "--device", plan.device, "--warmup", str(plan.bench_warmup), "--seconds", str(plan.packed_seconds)]  # fmt: skip
            cmd += [f"--set={s}" for s in plan.overrides]
            self.row("packed", f"{n} trainer{'s' if n > 1 else ''}", lambda limit, n=n, cmd=cmd: self.pack(n, cmd, limit),
                     plan.packed_timeout, command=self.shown(cmd) + f" (x{n}, each with --sync DIR --id I)")  # fmt: skip

    def pack(self, n: int, cmd: list[str], limit: float) -> dict:
        """n trainers started at once; all time the same wall-clock window, once each has warmed up."""
        deadline = time.monotonic() + limit
        sync = Path(tempfile.mkdtemp(prefix=f"packed{n}-", dir=self.work))
        procs = [start(cmd + ["--sync", str(sync), "--id", str(i)], self.work) for i in range(n)]
        try:
            while len(list(sync.glob("ready-*"))) < n:
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    # A trainer died or hung before it was ready: stop them all, say why.
                    for i, p in enumerate(procs):
                        if p.poll() is None:
                            kill(p)
                    for i, p in enumerate(procs):
                        finish(p, 10, self.log(f"packed {n}-{i}"))  # the first that failed raises
                    raise RowFailed(f"the trainers were not all ready within {limit:.0f} s")
                time.sleep(0.1)
            go = sync / "go.tmp"
            go.write_text(str(time.time() + 1.0))  # wall clock: shared by every process
            go.replace(sync / "go")
            results = [
                json_result(finish(p, deadline - time.monotonic(), self.log(f"packed {n}-{i}"))) for i, p in enumerate(procs)
            ]
        finally:
            for p in procs:
                if p.poll() is None:
                    kill(p)
        rates = [r["img_s"] for r in results]
        single = sum(rates) if n == 1 else self.figure("packed", "1 trainer", "aggregate_img_s")
        return {
            "trainers": n,
            "aggregate_img_s": sum(rates),
            "per_trainer_img_s": rates,
            "mean_img_s": sum(rates) / n,
            "min_img_s": min(rates),
            "vs_one_trainer": sum(rates) / single if single else None,
            "seconds_each": [r["seconds"] for r in results],
            "peak_mem_mb_each": [r["peak_mem_mb"] for r in results],
        }

    def fidelity(self) -> None:
        cmd = [sys.executable, "-m", "rrdtui.train.gpu_check", "--fidelity-worker", str(self.work / "fidelity")]
        cmd += ["--teacher-epochs", str(self.plan.teacher_epochs), "--student-epochs", str(self.plan.student_epochs)]
        cmd += [f"--set={s}" for s in self.plan.fidelity_data]

        def measure(limit: float) -> dict:
            return json_result(finish(start(cmd, self.work), limit, self.log("fidelity")))

        self.row("fidelity", "demo teacher (resnet14) and student (resnet8, rrd+kd)", measure, self.plan.fidelity_timeout,
                 command=self.shown(cmd))  # fmt: skip

    # -- the demo through the CLI ------------------------------------------------------------------

    def demo(self) -> None:
        runs = self.work / "demo-runs"
        preset = self.demo_preset()
        base = [sys.executable, "-m", "rrdtui.cli", "run", str(preset), "--runs", str(runs)]
        run_cmd = base + ["--set", "train.epochs=2", "--set", "optim.milestones=[1]"]
        self.row("demo", "2-epoch run (rrdtui run)", lambda limit: self.demo_run(run_cmd, runs, limit), self.plan.demo_timeout,
                 command=self.shown(run_cmd))  # fmt: skip
        # The demo's own epochs, and log_every 1 (the store shows each step): the stop lands while
        # the run trains even where a step takes milliseconds and `rrdtui stop` a second to start.
        detached = base + ["--set", "seed=1", "--set", "train.log_every=1", "--detach"]
        self.row("demo", "stop and resume (rrdtui stop, rrdtui resume)", lambda limit: self.stop_resume(detached, runs, limit),
                 self.plan.demo_timeout, command=self.shown(detached) + "; rrdtui stop RUN; rrdtui resume RUN")  # fmt: skip

    def demo_preset(self) -> Path:
        """The demo preset: the real one on the GPU; in a dry run a copy with tiny data (its teacher too)."""
        if not self.dry_run:
            return PRESETS / "demo.yaml"
        import yaml

        folder = self.work / "demo-presets"
        folder.mkdir(exist_ok=True)
        tiny = {"train_size": 256, "val_size": 128, "probe_size": 64}
        for name, epochs in (("demo_teacher", 1), ("demo", 2)):
            body = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
            body["data"].update(tiny)
            body["train"].update(epochs=epochs)
            body["optim"]["milestones"] = [1]
            if name == "demo":
                body["method"]["queue_size"] = 128
            (folder / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
        return folder / "demo.yaml"

    def cli(self, args: list[str], runs: Path, limit: float, name: str) -> str:
        cmd = [sys.executable, "-m", "rrdtui.cli", *args, "--runs", str(runs)]
        return finish(start(cmd, self.work), limit, self.log(name))

    def demo_run(self, cmd: list[str], runs: Path, limit: float) -> dict:
        try:
            finish(start(cmd, self.work), limit, self.log("demo run"))
        except RowFailed:
            self.stop_trainers(runs)
            raise
        store = open_store(runs)
        student = next(r for r in store_runs(store) if r.get("teacher_run"))  # the teacher has none
        return run_figures(store, student, self.dry_run)

    def stop_resume(self, cmd: list[str], runs: Path, limit: float) -> dict:
        deadline = time.monotonic() + limit
        try:
            run_id = last_line(finish(start(cmd, self.work), limit, self.log("demo detached")))
            store = open_store(runs)
            row = wait_for(store, run_id, lambda r: r["status"] != "queued" and (r["step"] or 0) >= 1 or ended(r), deadline)
            if ended(row):
                raise RowFailed(f"the run was {row['status']} before it could be stopped (step {row['step']})")
            self.cli(["stop", run_id], runs, deadline - time.monotonic(), "demo stop")
            stopped = wait_for(store, run_id, ended, deadline)
            if stopped["status"] != "stopped":
                raise RowFailed(f"after rrdtui stop the run is {stopped['status']}, not stopped (step {stopped['step']})")
            at = {"stopped_at_step": stopped["step"], "stopped_at_epoch": stopped["epoch"]}
            self.cli(["resume", run_id], runs, deadline - time.monotonic(), "demo resume")
        except RowFailed:
            self.stop_trainers(runs)
            raise
        return {**at, **run_figures(store, store.get_run(run_id), self.dry_run)}

    def stop_trainers(self, runs: Path) -> None:
        """Kill the detached trainers this check started and left running (a row that failed)."""
        try:
            store = open_store(runs)
        except Exception:
            return
        for row in store_runs(store):
            if row["status"] in ("running", "queued") and row.get("pid"):
                try:
                    os.kill(row["pid"], signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def shown(cmd: list[str], work: Path) -> str:
    """A command as the MD shows it: paths relative to the checkout, the temporary folder as $TMP,
    the interpreter as python."""
    words = ["python" if w == sys.executable else w.replace(str(ROOT) + "/", "").replace(str(work), "$TMP") for w in cmd]
    return " ".join(words)


def open_store(runs: Path):
    from rrdtui.store import Store

    return Store(runs, readonly=True)


def store_runs(store) -> list[dict]:
    return list(store.db.query("SELECT * FROM runs"))


def ended(row: dict) -> bool:
    return row["status"] not in ("queued", "running")


def wait_for(store, run_id: str, condition: Callable[[dict], bool], deadline: float) -> dict:
    while True:
        row = store.get_run(run_id)
        if row is not None and condition(row):
            return row
        if time.monotonic() > deadline:
            raise RowFailed(f"timed out waiting for run {run_id} (it is {row['status'] if row else 'missing'})")
        time.sleep(0.02)


def run_figures(store, row: dict, dry_run: bool) -> dict:
    env = json.loads(row["env"]) if row.get("env") else {}
    teacher = store.get_run(row["teacher_run"]) if row.get("teacher_run") else None
    figures = {
        "run": row["id"],
        "status": row["status"],
        "epoch": row["epoch"],
        "epochs": row["epochs"],
        "step": row["step"],
        "val_acc": store.latest(row["id"]).get("val/acc"),
        "teacher_status": teacher["status"] if teacher else None,
        "teacher_acc": row.get("teacher_acc"),
        "device": env.get("device"),
        "gpu": env.get("gpu"),
        "error": row.get("error"),
    }
    if row["status"] != "completed":
        raise RowFailed(f"run {row['id']} ended {row['status']}: {row.get('error') or 'no error stored'}")
    if not dry_run and not str(env.get("device", "")).startswith("cuda"):
        raise RowFailed(f"run {row['id']} trained on {env.get('device')}, not on CUDA")
    return figures


def machine() -> dict:
    from rrdtui.train.bench import platform_cpu
    from rrdtui.train.loop import environment

    import torchvision

    cuda = torch.cuda.is_available()
    info = environment(torch.device("cuda" if cuda else "cpu"))
    info.update(torchvision=torchvision.__version__, cpu=platform_cpu(), cpus=os.cpu_count())
    if cuda:
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["gpus"] = torch.cuda.device_count()
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            info["nvidia_smi"] = smi.stdout.strip().splitlines()[0] if smi.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            info["nvidia_smi"] = None
    return info


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def fmt(value, spec: str = ".1f", suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:{spec}}{suffix}"
    return str(value)


def percent(share: float | None) -> float | None:
    return share * 100 if share is not None else None


# Per part: the table's columns, (header, how to show a row's figures).
COLUMNS: dict[str, list[tuple[str, Callable[[dict], str]]]] = {
    "bench": [
        ("ours img/s", lambda f: fmt(f.get("fast_img_s"), ",.0f")),
        ("reference img/s", lambda f: fmt(f.get("reference_img_s"), ",.0f")),
        ("ratio", lambda f: fmt(f.get("ratio"), ".2f", "x")),
        ("our step", lambda f: fmt(f.get("step_ms"), ".2f", " ms")),
        ("peak memory", lambda f: fmt(f.get("peak_mem_mb"), ",.0f", " MB")),
        ("rrd_loss share", lambda f: fmt(percent(f.get("rrd_loss_share")), ".1f", "%")
         + ("" if f.get("rrd_in_step", True) else " (unused)")),
        ("full run", lambda f: fmt(f.get("full_run_s"), ",.0f", " s")),
    ],
    "modes": [
        ("img/s", lambda f: fmt(f.get("fast_img_s"), ",.0f")),
        ("step", lambda f: fmt(f.get("step_ms"), ".2f", " ms")),
        ("vs eager", lambda f: fmt(f.get("vs_eager"), ".2f", "x")),
        ("peak memory", lambda f: fmt(f.get("peak_mem_mb"), ",.0f", " MB")),
        ("CUDA graphs", lambda f: fmt(f.get("cuda_graphs"))),
    ],
    "packed": [
        ("aggregate img/s", lambda f: fmt(f.get("aggregate_img_s"), ",.0f")),
        ("per trainer (mean, min)", lambda f: f"{fmt(f.get('mean_img_s'), ',.0f')}, {fmt(f.get('min_img_s'), ',.0f')}"),
        ("vs 1 trainer", lambda f: fmt(f.get("vs_one_trainer"), ".2f", "x")),
        ("peak memory each", lambda f: fmt(max(f["peak_mem_mb_each"]) if f.get("peak_mem_mb_each") else None, ",.0f", " MB")),
    ],
    "fidelity": [
        ("teacher acc fp32 / bf16", lambda f: f"{fmt(f.get('teacher_acc_fp32'), '.2f')} / {fmt(f.get('teacher_acc_bf16'), '.2f')}"),
        ("mean KL(fp32, bf16) at T=4", lambda f: fmt(f.get("mean_kl_T4"), ".2e")),
        ("top-1 agreement", lambda f: fmt(f.get("top1_agreement"), ".2f", "%")),
        ("max / mean abs logit diff", lambda f: f"{fmt(f.get('max_abs_logit_diff'), '.3f')} / {fmt(f.get('mean_abs_logit_diff'), '.4f')}"),
        ("student acc, fp32 / bf16 / fp32 again", lambda f: " / ".join(fmt(f.get(k), ".2f") for k in ("student_acc_fp32", "student_acc_bf16", "student_acc_fp32_repeat"))),
    ],
    "demo": [
        ("run ended", lambda f: fmt(f.get("status"))),
        ("stopped at", lambda f: f"step {f['stopped_at_step']}, epoch {f['stopped_at_epoch']}" if "stopped_at_step" in f else "-"),
        ("epoch / step", lambda f: f"{fmt(f.get('epoch'), '.0f')}/{fmt(f.get('epochs'), '.0f')}, step {fmt(f.get('step'), '.0f')}"),
        ("val/acc", lambda f: fmt(f.get("val_acc"), ".2f")),
        ("teacher", lambda f: f"{fmt(f.get('teacher_status'))}, {fmt(f.get('teacher_acc'), '.2f')}%"),
        ("device", lambda f: fmt(f.get("gpu") or f.get("device"))),
    ],
}  # fmt: skip


def markdown(result: dict) -> str:
    m = result["machine"]
    gpu = f"{m['gpu']} ({m.get('gpu_memory_gib')} GiB), CUDA {m.get('cuda')}" if m.get("gpu") else "no GPU"
    lines = [
        "# GPU check (`scripts/gpu_check.sh`)",
        "",
        f"Machine: {gpu}; {m.get('nvidia_smi') or 'nvidia-smi: -'}; {m['cpu']}, {m['cpus']} logical CPUs; "
        f"Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}; host {m['host']}; commit {m.get('git_commit')}.",
        f"Started {result['started']}; {result['seconds']:.0f} s of a {result['budget_s']:.0f} s budget"
        + ("; **dry run on the CPU** (tiny step counts: the figures say the check works, not how fast anything is)." if result["dry_run"] else "."),
    ]  # fmt: skip
    for number, (name, part) in enumerate(result["parts"].items(), start=1):
        lines += ["", f"## {number}. {part['title']}: {part['status']}", ""]
        if not part["rows"]:
            lines.append(f"Not run: {part['reason']}.")
            continue
        columns = COLUMNS[name]
        lines.append("| row | " + " | ".join(h for h, _ in columns) + " | status |")
        lines.append("|---" * (len(columns) + 2) + "|")
        for row in part["rows"]:
            figures = row.get("figures") or {}
            cells = [show(figures) if figures else "" for _, show in columns]
            status = row["status"] + (f": {row['reason']}" if row.get("reason") else "")
            lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {status.replace('|', '/')} |")
        commands = [f"- {row['name']}: `{row['command']}`" for row in part["rows"] if row.get("command")]
        if commands:
            lines += ["", "Commands:", *commands]
    lines += ["", "## Failures", ""] + ([f"- {f}" for f in result["failed"]] or ["None."])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Workers (subprocesses of the check)
# ---------------------------------------------------------------------------------------------


def packed_worker(args) -> dict:
    """One of N packed trainers: bench's loop, warmed up, then timed over the window the check opens."""
    from rrdtui.config import load_preset
    from rrdtui.train import bench
    from rrdtui.train.loop import build, pick_device

    cfg = load_preset(args.packed_worker, args.overrides)
    device = pick_device(args.device)
    sync = Path(args.sync)
    with tempfile.TemporaryDirectory(prefix="rrdtui-packed-") as tmp:
        data, teacher_path = bench.bench_inputs(cfg, Path(tmp))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        loop = bench.FastLoop(build(cfg, teacher_path, data, device))
        bench.warm_up(loop, device, args.warmup)
        (sync / f"ready-{args.id}").touch()
        limit = time.monotonic() + 600  # an orphan (its check gone) gives up
        while not (sync / "go").exists():
            if time.monotonic() > limit:
                raise SystemExit("no go from the check")
            time.sleep(0.02)
        time.sleep(max(0.0, float((sync / "go").read_text()) - time.time()))
        images, seconds = bench.timed_for(loop, device, args.seconds)
        return {"images": images, "seconds": seconds, "img_s": images / seconds, "peak_mem_mb": bench.peak_memory_mb(device)[0]}


def fidelity_worker(args) -> dict:
    """Teacher soft targets in bf16 against fp32, and students trained with each teacher precision."""
    import torch.nn.functional as F

    from rrdtui.config import load_preset
    from rrdtui.train.loop import Reporter, build, probe_outputs, train

    class Latest(Reporter):
        """The loop's reporter, keeping nothing but the latest value of each metric."""

        def __init__(self):
            self.values: dict[str, float] = {}

        def log(self, step, epoch, values) -> None:
            self.values.update(values)

        def stop_requested(self) -> bool:
            return False

    work = Path(args.fidelity_worker)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = list(args.overrides)

    def epochs(n: int) -> list[str]:  # the learning rate decays once, for the last epoch
        return [f"train.epochs={n}", f"optim.milestones=[{max(n - 1, 1)}]"]

    teacher_cfg = load_preset(PRESETS / "demo_teacher.yaml", data + epochs(args.teacher_epochs))
    teacher_dir = work / "teacher"
    teacher_dir.mkdir()
    started = time.monotonic()
    train(teacher_cfg, teacher_dir, Latest())
    teacher_path = str(teacher_dir / "last.pt")
    teacher_s = time.monotonic() - started
    student_sets = data + epochs(args.student_epochs) + [
        "teacher.preset=null", f"teacher.checkpoint={teacher_path}", f"teacher.arch={teacher_cfg.student.arch}",
    ]  # fmt: skip

    def student_cfg(dtype: str):
        return load_preset(PRESETS / "demo.yaml", student_sets + [f"train.teacher_dtype={dtype}"])

    # The teacher's logits on the validation set, through the loop's own teacher forward.
    logits, labels = {}, None
    for dtype in ("fp32", "bf16"):
        setup = build(student_cfg(dtype), teacher_path)
        outs, ys = [], []
        for x, y in setup.source.val():
            outs.append(probe_outputs(setup.teacher, x, setup)[1].double())
            ys.append(y)
        logits[dtype], labels = torch.cat(outs), torch.cat(ys)
    T = 4.0
    log_p32, log_pbf = F.log_softmax(logits["fp32"] / T, dim=1), F.log_softmax(logits["bf16"] / T, dim=1)
    kl = (log_p32.exp() * (log_p32 - log_pbf)).sum(dim=1)
    diff = (logits["fp32"] - logits["bf16"]).abs()
    figures = {
        "device": str(setup.device),
        "teacher": teacher_cfg.student.arch,
        "teacher_epochs": args.teacher_epochs,
        "teacher_train_s": teacher_s,
        "val_images": int(labels.shape[0]),
        "teacher_acc_fp32": float((logits["fp32"].argmax(1) == labels).double().mean() * 100),
        "teacher_acc_bf16": float((logits["bf16"].argmax(1) == labels).double().mean() * 100),
        "mean_kl_T4": float(kl.mean()),
        "max_kl_T4": float(kl.max()),
        "top1_agreement": float((logits["fp32"].argmax(1) == logits["bf16"].argmax(1)).double().mean() * 100),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "student": student_cfg("fp32").student.arch,
        "student_method": student_cfg("fp32").method.name,
        "student_epochs": args.student_epochs,
        "student_amp": "bf16" if setup.use_bf16 else "fp32",
    }
    # Students from the same seed; fp32 twice, for the run-to-run noise of the GPU's kernels.
    for key, dtype in (("fp32", "fp32"), ("bf16", "bf16"), ("fp32_repeat", "fp32")):
        run_dir = work / f"student-{key}"
        run_dir.mkdir()
        outcome = train(student_cfg(dtype), run_dir, Latest(), teacher_path=teacher_path)
        figures[f"student_acc_{key}"] = outcome.final.get("val_acc")
    return figures


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m rrdtui.train.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", nargs="?", help="where gpu_check.json and gpu_check.md go")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny step counts (CUDA-only rows skipped)")
    parser.add_argument("--budget", type=float, help="seconds for all rows (default 450 on the GPU)")
    parser.add_argument("--parts", help=f"a comma-separated subset of {','.join(PARTS)}")
    # Internal: the check's own subprocesses.
    parser.add_argument("--packed-worker", metavar="PRESET", help=argparse.SUPPRESS)
    parser.add_argument("--fidelity-worker", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--sync", help=argparse.SUPPRESS)
    parser.add_argument("--id", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--teacher-epochs", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--student-epochs", type=int, default=6, help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if args.packed_worker or args.fidelity_worker:
        worker = packed_worker if args.packed_worker else fidelity_worker
        print(json.dumps(worker(args)), flush=True)
        return 0
    if not args.outdir:
        parser.error("OUTDIR is required")
    if not args.dry_run and not torch.cuda.is_available():
        print("rrdtui: error: no CUDA device here: run the GPU check on a GPU, or --dry-run on the CPU", file=sys.stderr)
        return 2
    parts = set(PARTS) if not args.parts else {p.strip() for p in args.parts.split(",")}
    unknown = parts - set(PARTS)
    if unknown:
        print(f"rrdtui: error: --parts: unknown {', '.join(sorted(unknown))} (choose from {', '.join(PARTS)})", file=sys.stderr)
        return 2
    plan = DRY_RUN if args.dry_run else GPU
    out = Path(args.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, plan, args.dry_run, args.budget or plan.budget_s)
    check.run(parts)
    failed = check.result["failed"]
    print(f"gpu_check: {out / 'gpu_check.md'} ({len(failed)} failed row{'s' if len(failed) != 1 else ''})")
    for line in failed:
        print(f"  failed: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
