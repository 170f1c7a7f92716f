"""Hostile and broken inputs: each ends in one line on stderr (exit code 2), never a traceback or a hang.

Presets that explode (alias bombs, huge files), stores that are not stores or cannot be written,
export paths that cannot be files, a full disk under a checkpoint, `--runs` before the command,
teacher checkpoints users already own (unsafe pickles, RepDistiller's and mdistiller's layouts), the
teacher check before a run row is written, and the presets installed with the package.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rrdtui import cli
from rrdtui import presets as presets_module
from rrdtui import store as store_module
from rrdtui.config import MAX_ALIAS_NODES, MAX_PRESET_BYTES, ConfigError, Config, load_preset
from rrdtui.launcher import launch, plan_runs
from rrdtui.preflight import preflight
from rrdtui.store import Store, StoreError
from rrdtui.train import checkpoint
from rrdtui.train.checkpoint import CheckpointError
from rrdtui.train.models import build_model
from rrdtui.train.teacher import load_teacher

from conftest import TINY_DATA, TINY_TRAIN, write_preset

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def rrdtui(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command in a process of its own (the point is what reaches the terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "rrdtui.cli", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "RRDTUI_DATA": str(cwd / "data"), **(env or {})},
    )  # fmt: skip


def one_line_error(proc, *expected: str) -> str:
    """Exit code 2 and exactly one line on stderr, `rrdtui: error: ...`, holding each expected part."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("rrdtui: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for part in expected:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def new_run(store: Store) -> str:
    cfg = Config()
    cfg.method.name = "none"
    run_id = store.create_run(cfg.to_dict(), config_hash=cfg.fingerprint())
    store.insert_metrics([(run_id, 1, 0.5, "val/acc", 12.5, 1.0), (run_id, 2, 1.0, "val/acc", 25.0, 2.0)])
    return run_id


# ---------------------------------------------------------------------------------------------
# 1. Presets that explode; scientific notation
# ---------------------------------------------------------------------------------------------


def alias_bomb(indent: str = "  ") -> str:
    """The "billion laughs": nine levels of nine aliases each, 9**9 strings once expanded."""
    lines = [f"{indent}a: &a [x,x,x,x,x,x,x,x,x]"]
    previous = "a"
    for level in "bcdefghi":
        lines.append(f"{indent}{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = level
    return "\n".join(lines) + "\n"


BOMBS = {
    "description": "method: {name: none}\ndescription:\n" + alias_bomb(),
    "nested": "method: {name: none}\ndata:\n  root:\n" + alias_bomb("    "),
    "recursive": "method: {name: none}\ndescription: &a [*a]\n",
}


@pytest.mark.parametrize("where", sorted(BOMBS))
def test_an_alias_bomb_in_a_preset_is_refused_before_anything_is_built(tmp_path, where):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMBS[where])
    for overrides in ([], ["train.epochs=3"]):
        with pytest.raises(ConfigError) as info:
            load_preset(path, overrides)
        assert str(path) in str(info.value) and "refused" in str(info.value) and "\n" not in str(info.value)
    proc = rrdtui("run", path, "--set", "train.epochs=3", cwd=tmp_path)
    one_line_error(proc, str(path), "refused")
    assert not (tmp_path / "runs" / "rrdtui.db").exists() or not Store(tmp_path / "runs").list_runs()


def test_the_alias_bomb_message_names_the_bound(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMBS["description"])
    with pytest.raises(ConfigError, match=rf"YAML aliases expand past {MAX_ALIAS_NODES:,} nodes \(an alias bomb\?\)"):
        load_preset(path)


def test_an_alias_bomb_in_a_set_value_is_refused(tmp_path):
    path = write_preset(tmp_path, "fine", method={"name": "none"})
    bomb = "{" + alias_bomb("").replace("\n", ", ").rstrip(", ") + "}"
    with pytest.raises(ConfigError, match="--set description=...: refused: YAML aliases expand past"):
        load_preset(path, [f"description={bomb}"])
    one_line_error(rrdtui("run", path, "--set", f"description={bomb}", cwd=tmp_path), "refused", "alias")


def test_a_few_aliases_are_fine(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("method: {name: none}\noptim: &o {milestones: [3, 5]}\npaper: {student: 70.0}\n"
                    "description: plain\ngroup: g\n")
    assert load_preset(path).optim.milestones == [3, 5]
    path.write_text("method: {name: none}\ntrain: &t {epochs: 3}\ndata: {probe_size: 64}\n"
                    "optim: {milestones: &m [1, 2]}\ndescription: x\n")
    assert load_preset(path, ["optim.milestones=[1, 2]"]).optim.milestones == [1, 2]


def test_a_huge_preset_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "w") as fh:
        fh.write("method: {name: none}\ndescription: >\n")
        line = "  " + "lorem ipsum " * 8 + "\n"
        fh.write(line * (10 * (1 << 20) // len(line)))  # 10 MB
    with pytest.raises(ConfigError, match=r"huge.yaml: refused: larger than 1 MiB"):
        load_preset(path)
    one_line_error(rrdtui("run", path, cwd=tmp_path), str(path), "larger than 1 MiB")
    one_line_error(rrdtui("bench", path, cwd=tmp_path), "larger than 1 MiB")


def test_a_preset_just_under_the_limit_still_reads(tmp_path):
    path = tmp_path / "long.yaml"
    text = "method: {name: none}\ndescription: "
    path.write_text(text + "x" * (MAX_PRESET_BYTES - len(text) - 1) + "\n")
    assert load_preset(path).description.startswith("xxx")


def test_a_binary_or_absurdly_nested_preset_is_one_line(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"method: {name: none}\n\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a text file"):
        load_preset(path)
    path = tmp_path / "deep.yaml"
    path.write_text("description: " + "[" * 200_000)
    with pytest.raises(ConfigError, match="refused: the YAML nests too deep"):
        load_preset(path)


# ---------------------------------------------------------------------------------------------
# 2. Broken stores
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def garbage_store(tmp_path) -> Path:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "rrdtui.db").write_bytes(os.urandom(65536))
    return tmp_path


@pytest.mark.parametrize("command", [["ls"], ["show", "abcd"], ["run", ROOT / "presets" / "demo.yaml"],
                                     ["export", "abcd"], ["rm", "-y", "abcd"], ["plot", "abcd"]])
def test_a_store_that_is_not_a_database_is_one_line(garbage_store, command):
    proc = rrdtui(*command, cwd=garbage_store)
    one_line_error(
        proc,
        "runs/rrdtui.db is not an rrdtui store (file is not a database): move it away or choose another folder with --runs",
    )


def test_runs_that_is_a_file_or_a_db_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    one_line_error(rrdtui("ls", "--runs", "notes.txt", cwd=tmp_path), "notes.txt is a file, not a folder of runs")
    (tmp_path / "runs" / "rrdtui.db").mkdir(parents=True)
    one_line_error(rrdtui("--runs", "runs", "show", "x", cwd=tmp_path), "runs/rrdtui.db is a folder, not a store")


def test_a_sqlite_database_of_something_else_is_not_a_store(tmp_path):
    (tmp_path / "runs").mkdir()
    conn = sqlite3.connect(tmp_path / "runs" / "rrdtui.db")
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="is not an rrdtui store .a database of something else."):
        Store(tmp_path / "runs")
    assert sqlite3.connect(tmp_path / "runs" / "rrdtui.db").execute("SELECT name FROM sqlite_master").fetchall() == [
        ("recipes",)
    ]  # left as it was


def test_the_dashboard_lister_survives_a_garbage_store(garbage_store):
    from rrdtui.tui.model import RunLister

    assert RunLister().load_quick(garbage_store / "runs") is None
    with pytest.raises(StoreError, match="not an rrdtui store"):  # shown on its status line
        Store(garbage_store / "runs")


def test_a_read_only_store_reads_with_and_without_its_shm_file(tmp_path):
    store = Store(tmp_path / "runs")
    run_id = new_run(store)
    reader = Store(tmp_path / "runs", readonly=True)  # the writer is open: -wal and -shm exist
    assert reader.get_run(run_id)["id"] == run_id and reader.latest(run_id)["val/acc"] == 25.0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.update_run(run_id, name="x")
    reader.close()
    store.close()
    assert not (tmp_path / "runs" / "rrdtui.db-shm").exists()  # closed cleanly: the file alone
    reader = Store(tmp_path / "runs", readonly=True)
    assert [r["id"] for r in reader.list_runs()] == [run_id]
    reader.close()


def test_read_only_open_falls_back_to_immutable_when_no_shm_can_be_made(tmp_path, monkeypatch):
    store = Store(tmp_path / "runs")
    run_id = new_run(store)
    store.close()
    real_connect = sqlite3.connect
    opened = []

    class NoShm:  # what SQLite answers, in a read-only folder, for a WAL file without its -shm
        def execute(self, *args):
            raise sqlite3.OperationalError("unable to open database file")

        def close(self):
            pass

    def connect(database, *args, **kwargs):
        opened.append(database)
        return real_connect(database, *args, **kwargs) if "immutable=1" in database else NoShm()

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    reader = Store(tmp_path / "runs", readonly=True)
    assert [r["id"] for r in reader.list_runs()] == [run_id]
    assert "mode=ro" in opened[0] and "immutable=1" in opened[-1]


def test_no_store_in_a_read_only_folder(tmp_path):
    with pytest.raises(StoreError, match="no store at .*rrdtui.db, and its folder is read-only"):
        Store(tmp_path / "nothing", readonly=True)


def test_cli_reads_a_store_it_cannot_write_and_refuses_to_change_it(tmp_path, monkeypatch):
    store = Store(tmp_path / "runs")
    run_id = new_run(store)
    store.close()
    monkeypatch.setattr(cli, "store_writable", lambda folder: False)
    monkeypatch.setattr(store_module, "store_writable", lambda folder: False)
    runs = tmp_path / "runs"
    result = runner.invoke(cli.app, ["ls", "--runs", str(runs)])
    assert result.exit_code == 0 and run_id in result.output
    result = runner.invoke(cli.app, ["show", run_id, "--runs", str(runs)])
    assert result.exit_code == 0 and f"run {run_id}" in result.output
    result = runner.invoke(cli.app, ["export", run_id, "--runs", str(runs)])
    assert result.exit_code == 0 and list(csv.DictReader(io.StringIO(result.output)))[1]["value"] == "25.0"
    for command in (["rm", "-y", run_id], ["stop", run_id], ["resume", run_id],
                    ["run", str(write_preset(tmp_path, "p", method={"name": "none"}))]):
        result = runner.invoke(cli.app, [*command, "--runs", str(runs)])
        assert result.exit_code == 2, (command, result.output)
        assert result.output.strip().splitlines() == [
            f"rrdtui: error: {runs / 'rrdtui.db'} is read-only: rrdtui can list and show its runs but not change "
            "them; choose a writable folder with --runs"
        ]
    assert [r["id"] for r in Store(runs, readonly=True).list_runs()] == [run_id]


def _read_only_mounts_work() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / /mnt 2>/dev/null || mount -t tmpfs t /mnt"],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


READ_ONLY_MOUNT = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'


@pytest.mark.skipif(not _read_only_mounts_work(), reason="needs root and mount namespaces (unshare -m)")
@pytest.mark.parametrize("writer_open", [False, True], ids=["file-alone", "writer-open"])
def test_a_store_on_a_read_only_file_system(tmp_path, writer_open):
    """A real read-only file system: the store's folder bind-mounted read-only in a mount namespace."""
    runs = tmp_path / "runs"
    store = Store(runs)
    run_id = new_run(store)
    if not writer_open:
        store.close()

    def ro(*args):
        cmd = ["unshare", "-m", "sh", "-c", READ_ONLY_MOUNT, "sh", str(runs),
               sys.executable, "-m", "rrdtui.cli", *map(str, args), "--runs", str(runs)]  # fmt: skip
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)

    try:
        listing = ro("ls")
        assert listing.returncode == 0 and run_id in listing.stdout, listing.stderr
        shown = ro("show", run_id, "--json")
        assert shown.returncode == 0 and f'"id": "{run_id}"' in shown.stdout, shown.stderr
        exported = ro("export", run_id)
        assert exported.returncode == 0 and "25.0" in exported.stdout, exported.stderr
        one_line_error(ro("rm", "-y", run_id), f"{runs / 'rrdtui.db'} is read-only", "choose a writable folder with --runs")
    finally:
        if writer_open:
            store.close()


# ---------------------------------------------------------------------------------------------
# 3. export -o a path that cannot be a file
# ---------------------------------------------------------------------------------------------


def test_export_to_a_missing_folder_or_a_folder_is_one_line_and_writes_nothing(tmp_path):
    store = Store(tmp_path / "runs")
    run_id = new_run(store)
    store.close()
    (tmp_path / "some" / "dir").mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "runs" not in p.parts)
    one_line_error(rrdtui("export", run_id, "-o", "missing/dir/out.csv", cwd=tmp_path),
                   "-o missing/dir/out.csv: the folder missing/dir does not exist: create it first")  # fmt: skip
    one_line_error(rrdtui("export", run_id, "-o", "some/dir", cwd=tmp_path),
                   "-o some/dir: is a folder: give a file name in it, e.g. -o some/dir/metrics.csv")  # fmt: skip
    (tmp_path / "file").write_text("x")
    one_line_error(rrdtui("export", run_id, "-o", "file/out.csv", cwd=tmp_path), "the folder file is not a folder")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "runs" not in p.parts) == sorted(before + [Path("file")])
    ok = rrdtui("export", run_id, "--format", "json", "-o", "some/dir/out.json", cwd=tmp_path)
    assert ok.returncode == 0 and '"value": 25.0' in (tmp_path / "some" / "dir" / "out.json").read_text()
    assert sorted(os.listdir(tmp_path / "some" / "dir")) == ["out.json"]  # no temporary file left


# ---------------------------------------------------------------------------------------------
# 4. A full disk under a checkpoint; a truncated checkpoint
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_checkpoint_write_on_a_full_disk_says_so(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"model": {"w": torch.zeros(3)}}, path)
    before = path.read_bytes()
    # The temporary file is /dev/full: every write to it fails with ENOSPC, for real.
    (tmp_path / "last.pt.tmp").symlink_to("/dev/full")
    with pytest.raises(CheckpointError) as info:
        checkpoint.save_atomic({"model": {"w": torch.ones(100_000)}}, path)
    message = str(info.value)
    assert message.startswith(f"disk full: cannot write {path} (") and " free): free space on " in message
    assert message.endswith(" and resume") and "\n" not in message
    assert path.read_bytes() == before and not os.path.lexists(tmp_path / "last.pt.tmp")


def test_torch_s_own_short_write_report_is_a_full_disk_too(tmp_path, monkeypatch):
    def save(obj, fh):
        fh.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 1984 vs 1873")

    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(CheckpointError, match=r"^disk full: cannot write .*last.pt \(.* free\): free space on /"):
        checkpoint.save_atomic({"model": {}}, tmp_path / "last.pt")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, fh: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # anything else is not a full disk
        checkpoint.save_atomic({"model": {}}, tmp_path / "last.pt")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_truncated_checkpoint_says_it_is_truncated(tmp_path, legacy):
    path = tmp_path / "last.pt"
    torch.save({"model": build_model("resnet8", 4).state_dict()}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is truncated \(.*\): it was not written completely"):
        checkpoint.load(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        checkpoint.load(path)


# ---------------------------------------------------------------------------------------------
# 5. --runs before the command
# ---------------------------------------------------------------------------------------------


def test_runs_before_the_command_is_the_store_of_every_command(tmp_path, monkeypatch):
    stores = {}
    for name in ("a", "b", "env"):
        store = Store(tmp_path / name)
        stores[name] = new_run(store)
        store.close()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RRDTUI_RUNS", raising=False)

    def listed(*args) -> str:
        result = runner.invoke(cli.app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    assert stores["a"] in listed("--runs", "a", "ls") and stores["b"] not in listed("--runs", "a", "ls")
    assert stores["b"] in listed("--runs", "a", "ls", "--runs", "b")  # the command's own wins
    assert stores["a"] in listed("--runs", "a", "show", stores["a"])
    monkeypatch.setenv("RRDTUI_RUNS", str(tmp_path / "env"))
    assert stores["a"] in listed("--runs", "a", "ls")  # given beats the environment
    out = listed("ls")
    assert stores["env"] in out and stores["a"] not in out  # the environment, when nothing is given


# ---------------------------------------------------------------------------------------------
# 6. Checkpoints users already own
# ---------------------------------------------------------------------------------------------


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_malicious_pickle_is_refused_naming_what_it_asks_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"fc.weight": Evil()}}, path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert message == f"{path} is not a plain weights file: it asks to load {os.system.__module__}.system (refused for safety)"
    assert "weights_only" not in message and not (tmp_path / "pwned.txt").exists()
    with pytest.raises(CheckpointError, match="is not a plain weights file") as info:
        load_teacher("resnet8", str(path), 4, 3)
    assert "weights_only" not in str(info.value)


def test_only_argparse_namespace_is_let_through(tmp_path):
    path = tmp_path / "parser.pth"
    torch.save({"model": {}, "opt": argparse.FileType("r")}, path)
    with pytest.raises(CheckpointError, match=r"it asks to load argparse.FileType \(refused for safety\)") as info:
        checkpoint.load(path)
    assert "weights_only" not in str(info.value) and "argparse.Namespace" not in str(info.value)


def test_repdistiller_last_checkpoint_with_its_namespace_loads(tmp_path):
    model = build_model("resnet8", 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    path = tmp_path / "resnet8_last.pth"
    opt = argparse.Namespace(model="resnet8", learning_rate=0.05, lr_decay_epochs=[150, 180, 210], trial="0")
    torch.save({"epoch": 240, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "opt": opt}, path)
    assert checkpoint.load(path)["opt"].lr_decay_epochs == [150, 180, 210]
    teacher = load_teacher("resnet8", str(path), 4, 3)
    assert torch.equal(teacher.state_dict()["fc.weight"], model.state_dict()["fc.weight"])


def mdistiller_file(path: Path, parts: dict[str, torch.nn.Module], extra: bool = True) -> None:
    """As mdistiller's trainer saves `best`/`latest`/`epoch_N`: the DataParallel distiller's state."""
    state = {}
    for prefix, model in parts.items():
        state.update({f"module.{prefix}.{k}": v for k, v in model.state_dict().items()})
    if extra:
        state["module.conn.0.weight"] = torch.zeros(8, 8, 1, 1)  # a distiller's own connector
    torch.save({"epoch": 240, "model": state, "optimizer": {"state": {}, "param_groups": []},
                "best_acc": torch.tensor(71.2)}, path)  # fmt: skip


def test_mdistiller_distiller_gives_its_student(tmp_path, caplog):
    student, other = build_model("resnet8", 4), build_model("resnet14", 4)
    path = tmp_path / "best"
    mdistiller_file(path, {"student": student, "teacher": other})
    with caplog.at_level(logging.INFO, logger="rrdtui.train"):
        loaded = load_teacher("resnet8", str(path), 4, 3)
    assert torch.equal(loaded.state_dict()["conv1.weight"], student.state_dict()["conv1.weight"])
    assert any("loading student.*" in r.getMessage() for r in caplog.records)
    only_teacher = tmp_path / "teacher_only"
    mdistiller_file(only_teacher, {"teacher": other}, extra=False)
    loaded = load_teacher("resnet14", str(only_teacher), 4, 3)
    assert torch.equal(loaded.state_dict()["fc.weight"], other.state_dict()["fc.weight"])


def test_a_wrong_architecture_names_the_first_missing_unexpected_and_reshaped_keys(tmp_path):
    path = tmp_path / "r14.pth"
    torch.save({"model": build_model("resnet14", 4).state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_teacher("resnet8", str(path), 4, 3)
    message = str(info.value)
    assert message.startswith(f"teacher {path} does not fit teacher.arch 'resnet8' (") and message.endswith("check teacher.arch")
    assert "(unexpected layer1.1.conv1.weight and 35 more)" in message
    path = tmp_path / "wrn.pth"
    torch.save({"model": build_model("wrn_16_2", 4).state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_teacher("resnet8", str(path), 4, 3)
    message = str(info.value)
    assert "missing layer1.0.conv1.weight and 47 more; unexpected block1.layer.0.bn1.weight and 74 more; " in message
    assert "bn1.weight is [128] in the file but [16] in the architecture" in message
    path = tmp_path / "narrow.pth"
    torch.save({"model": build_model("resnet8", 4).state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_teacher("resnet8x4", str(path), 4, 3)
    assert "conv1.weight is [16, 3, 3, 3] in the file but [32, 3, 3, 3] in the architecture" in str(info.value)
    assert str(info.value).endswith("check teacher.arch")


def test_the_class_count_check_still_speaks_first(tmp_path):
    path = tmp_path / "t.pth"
    torch.save({"model": build_model("resnet8", 4).state_dict()}, path)
    with pytest.raises(CheckpointError, match="predicts 4 classes but the data set has 5"):
        load_teacher("resnet8", str(path), 5, 3)
    assert isinstance(load_teacher("resnet8", str(path), None, 3), torch.nn.Module)  # classes unknown: no check


# ---------------------------------------------------------------------------------------------
# 7. The teacher checkpoint is checked before any run row is written
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("teachers")
    files = {"good": tmp / "good.pth", "classes": tmp / "classes.pth", "evil": tmp / "evil.pth"}
    torch.save({"model": build_model("resnet8", TINY_DATA["num_classes"]).state_dict()}, files["good"])
    torch.save({"model": build_model("resnet8", 7).state_dict()}, files["classes"])
    torch.save({"model": {"fc.weight": Evil()}}, files["evil"])
    return files


def student_preset(folder: Path, teacher: Path) -> Path:
    return write_preset(folder, "student", data=TINY_DATA, teacher={"checkpoint": str(teacher), "arch": "resnet8"},
                        student={"arch": "resnet8"}, method={"name": "kd"}, optim={"milestones": [1]},
                        train=TINY_TRAIN)  # fmt: skip


def test_cli_run_refuses_a_teacher_of_other_classes_before_writing_a_row(tmp_path, teacher_files):
    preset = student_preset(tmp_path, teacher_files["classes"])
    proc = rrdtui("run", preset, cwd=tmp_path)
    one_line_error(proc, f"teacher {teacher_files['classes']} predicts 7 classes but the data set has 4")
    assert Store(tmp_path / "runs").list_runs() == []


def test_dashboard_launch_refuses_an_unsafe_teacher_before_writing_a_row(tmp_path, teacher_files):
    preset = student_preset(tmp_path, teacher_files["evil"])
    with pytest.raises(ConfigError, match=r"is not a plain weights file: it asks to load .*system \(refused for safety\)"):
        launch(str(preset), [], tmp_path / "runs")
    assert Store(tmp_path / "runs").list_runs() == []


def test_preflight_passes_a_good_teacher_and_knows_each_data_set(tmp_path, teacher_files):
    from rrdtui.datacheck import data_shape

    cfg = load_preset(student_preset(tmp_path, teacher_files["good"]))
    preflight(plan_runs(cfg, "student.yaml", Store(tmp_path / "runs")))
    names = {"cifar100": (100, 3), "cifar10": (10, 3), "fashion_mnist": (10, 1), "imagefolder": (None, 3)}
    for name, shape in names.items():
        cfg.data.name = name
        assert data_shape(cfg) == shape
    assert data_shape(Config()) == (10, 3)


def test_the_teacher_check_process_prints_one_line(teacher_files):
    def check(*args):
        return subprocess.run([sys.executable, "-m", "rrdtui.train.teacher", *map(str, args)],
                              capture_output=True, text=True)  # fmt: skip

    assert check("resnet8", teacher_files["good"], 4, 3).returncode == 0
    bad = check("resnet14", teacher_files["good"], "-", 3)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("check teacher.arch")
    assert "Traceback" not in bad.stderr


# ---------------------------------------------------------------------------------------------
# 8. The presets come with the package
# ---------------------------------------------------------------------------------------------


def test_presets_are_found_from_any_folder_and_a_local_folder_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = presets_module.presets_dir()
    assert (found / "demo.yaml").is_file()  # the installed copy (or, from a checkout, the checkout's)
    result = runner.invoke(cli.app, ["presets"])
    assert result.exit_code == 0 and "demo" in result.output
    packaged = tmp_path / "site" / "presets_data"
    packaged.mkdir(parents=True)
    (packaged / "shipped.yaml").write_text("method: {name: none}\n")
    monkeypatch.setattr(presets_module, "PACKAGED_PRESETS", packaged)
    assert presets_module.presets_dir() == packaged  # the wheel's copy comes before a checkout's
    local = tmp_path / "presets"
    local.mkdir()
    (local / "mine.yaml").write_text("method: {name: none}\n")
    assert presets_module.presets_dir() == Path("presets")
    result = runner.invoke(cli.app, ["presets"])
    assert result.exit_code == 0 and "mine" in result.output and "demo" not in result.output


def test_the_preflight_and_the_cli_leave_torch_unimported():
    code = "import sys, rrdtui.cli, rrdtui.preflight, rrdtui.presets; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
