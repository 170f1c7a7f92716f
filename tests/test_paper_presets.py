"""The paper's presets, its numbers as project data, `rrdtui presets`, and the data preflight (no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import rrdtui.datacheck as datacheck
from rrdtui.cli import app
from rrdtui.config import ConfigError, from_mapping, load_preset
from rrdtui.reference import pair_numbers, paper_results, pairs
from rrdtui.store import Store

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "presets"
TEACHERS = {"wrn_40_2": 75.61, "resnet56": 72.34, "resnet110": 74.31, "resnet32x4": 79.42, "vgg13": 74.64,
            "ResNet50": 79.34}  # fmt: skip
PAIRS = [
    ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"), ("resnet110", "resnet20"),
    ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"), ("vgg13", "MobileNetV2"),
    ("ResNet50", "MobileNetV2"), ("ResNet50", "vgg8"), ("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"),
    ("wrn_40_2", "ShuffleV1"),
]  # fmt: skip

runner = CliRunner()


def test_paper_results_are_package_data_and_match_the_reference():
    results = paper_results()
    assert set(results) >= {"same_architecture", "different_architecture", "transfer_wrn_16_2"}
    assert [(t, s) for t, s, _ in pairs()] == PAIRS
    assert pair_numbers("wrn_40_2", "wrn_16_2")["RRD"] == 75.33
    assert "FSP" not in pair_numbers("wrn_40_2", "wrn_40_1")  # a null in the table
    assert pair_numbers("resnet8", "resnet20") is None
    results["same_architecture"].clear()  # a copy: the next caller gets the table intact
    assert pair_numbers("vgg13", "vgg8")["teacher"] == 74.64
    assert {t: n["teacher"] for t, _, n in pairs()} == TEACHERS


def test_reference_imports_no_torch():
    import subprocess

    code = "import sys, rrdtui.reference, rrdtui.datacheck, rrdtui.presets, rrdtui.transfer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("path", sorted(PRESETS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_loads_and_validates(path):
    cfg = load_preset(path)
    assert cfg.name == path.stem


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_teacher_presets_follow_the_recipe():
    for arch, acc in TEACHERS.items():
        path = PRESETS / f"cifar100_teacher_{arch}.yaml"
        cfg = load_preset(path)
        assert (cfg.student.arch, cfg.method.name, cfg.data.name) == (arch, "none", "cifar100")
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr) == (240, 64, 0.05)
        assert cfg.optim.milestones == [150, 180, 210]
        assert (cfg.optim.weight_decay, cfg.optim.momentum) == (5e-4, 0.9)
        assert cfg.paper == {"teacher": acc}


@pytest.mark.parametrize("teacher, student", PAIRS, ids=[f"{t}-{s}" for t, s in PAIRS])
def test_pair_presets_follow_the_recipe_and_carry_the_paper_row(teacher, student):
    path = PRESETS / f"cifar100_{teacher}-{student}.yaml"
    cfg = load_preset(path)
    assert cfg.student.arch == student and cfg.data.name == "cifar100"
    assert Path(cfg.teacher.preset) == (PRESETS / f"cifar100_teacher_{teacher}.yaml").resolve()
    assert cfg.teacher.expected_acc == TEACHERS[teacher]
    m = cfg.method
    assert (m.name, m.tau_s, m.tau_t, m.feat_dim, m.queue_size, m.enqueue) == ("rrd", 0.04, 0.1, 128, 16384, "after")
    assert cfg.optim.lr == (0.01 if student in ("MobileNetV2", "ShuffleV1", "ShuffleV2") else 0.05)
    assert cfg.optim.milestones == [150, 180, 210] and cfg.train.epochs == 240 and cfg.train.batch_size == 64
    assert (cfg.optim.weight_decay, cfg.optim.momentum) == (5e-4, 0.9)
    row = paper_results()["same_architecture" if (teacher, student) in PAIRS[:7] else "different_architecture"]
    expected = {k: v for k, v in row[f"{teacher}->{student}"].items() if v is not None}
    assert cfg.paper == expected
    text = path.read_text()
    assert f"teacher: {{checkpoint: path/to/ckpt_epoch_240.pth, arch: {teacher}}}" in text  # the hint
    # The hint, uncommented, is a valid teacher section too.
    raw = _raw(path)
    raw["teacher"] = {"checkpoint": "path/to/ckpt_epoch_240.pth", "arch": teacher}
    assert from_mapping(raw, str(path)).teacher.arch == teacher


def test_cifar_wrn_is_the_wrn_pair_under_a_short_name():
    short, pair = _raw(PRESETS / "cifar_wrn.yaml"), _raw(PRESETS / "cifar100_wrn_40_2-wrn_16_2.yaml")
    assert short.pop("name") == "cifar_wrn"
    pair.pop("name")
    assert short == pair
    cfg = load_preset(PRESETS / "cifar_wrn.yaml")
    assert (cfg.student.arch, cfg.method.name) == ("wrn_16_2", "rrd")
    assert Path(cfg.teacher.preset).name == "cifar100_teacher_wrn_40_2.yaml"


def test_imagenet_preset():
    cfg = load_preset(PRESETS / "imagenet_resnet34-resnet18.yaml")
    assert (cfg.teacher.arch, cfg.student.arch, cfg.data.name, cfg.method.name) == ("resnet34", "resnet18", "imagenet", "rrd+kd")
    assert cfg.teacher.checkpoint and not Path(cfg.teacher.checkpoint).exists()  # a placeholder
    assert (cfg.optim.lr, cfg.optim.milestones, cfg.train.batch_size, cfg.train.epochs) == (0.1, [30, 60, 90], 256, 120)
    assert (cfg.optim.weight_decay, cfg.data.workers) == (1e-4, 8)


def test_generator_reproduces_the_committed_presets(tmp_path):
    import subprocess

    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_paper_presets.py"), "--dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    written = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert len(written) == 6 + 13 + 2
    for name in written:
        assert (tmp_path / name).read_text() == (PRESETS / name).read_text(), name


def test_presets_command_lists_every_pair_with_the_paper_numbers():
    result = runner.invoke(app, ["presets", "--dir", str(PRESETS)], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines if "cifar100_" in line)
    for teacher, student in PAIRS:
        numbers = pair_numbers(teacher, student)
        [line] = [ln for ln in lines if ln.split() and ln.split()[0] == f"cifar100_{teacher}-{student}"]
        assert f"RRD {numbers['RRD']:.2f}" in line and f"{numbers['teacher']:.2f}" in line, line
    for arch, acc in TEACHERS.items():
        [line] = [ln for ln in lines if ln.split() and ln.split()[0] == f"cifar100_teacher_{arch}"]
        assert f"{acc:.2f}" in line
    # Grouped: each teacher's pairs follow it.
    names = [ln.split()[0] for ln in lines if ln.split()]
    for teacher, student in PAIRS:
        t, s = names.index(f"cifar100_teacher_{teacher}"), names.index(f"cifar100_{teacher}-{student}")
        between = names[t + 1 : s]
        assert not any(n.startswith("cifar100_teacher_") for n in between)


# ---------------------------------------------------------------------------------------------
# Data preflight
# ---------------------------------------------------------------------------------------------


def test_run_without_cifar100_and_without_network_is_one_line_and_no_run(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("RRDTUI_DATA", str(data))
    calls = []
    monkeypatch.setattr(datacheck, "reachable", lambda host, port, timeout=3.0: calls.append((host, port)) or False)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(PRESETS / "cifar_wrn.yaml"), "--runs", str(runs)])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in result.output
    assert "CIFAR-100 not found in" in err and str(data / "cifar100") in err
    assert "network is unreachable" in err and "cifar-100-python/" in err
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in err and "data.root" in err
    assert calls and calls[0] == ("www.cs.toronto.edu", 443)
    store = Store(runs)
    assert store.list_runs() == []
    store.close()


def test_launcher_launch_checks_data_too(tmp_path, monkeypatch):
    from rrdtui import launcher

    monkeypatch.setenv("RRDTUI_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(datacheck, "reachable", lambda *a, **k: False)
    monkeypatch.setattr(launcher, "spawn_worker", lambda *a, **k: pytest.fail("no trainer may start"))
    with pytest.raises(ConfigError, match="CIFAR-100 not found"):
        launcher.launch(str(PRESETS / "cifar_wrn.yaml"), [], tmp_path / "runs")
    store = Store(tmp_path / "runs")
    assert store.list_runs() == []
    store.close()


def _data(name: str, **kw):
    return from_mapping({"data": {"name": name, **kw}, "method": {"name": "none"}}, "test")


def test_check_data_passes_for_synthetic_and_a_cifar100_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(datacheck, "reachable", lambda *a, **k: pytest.fail("no network check when files are there"))
    datacheck.check_data(_data("synthetic"))
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(b"")
    monkeypatch.setenv("RRDTUI_DATA", str(tmp_path))
    datacheck.check_data(_data("cifar100"))  # $RRDTUI_DATA/cifar100/cifar-100-python
    datacheck.check_data(_data("cifar100", root=str(folder)))  # data.root pointing at the files
    monkeypatch.delenv("RRDTUI_DATA")
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ConfigError):
        datacheck.check_data(_data("cifar100", download=False))  # ./data/cifar100 has nothing


def test_check_data_network_and_download_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("RRDTUI_DATA", str(tmp_path))
    hosts = []
    monkeypatch.setattr(datacheck, "reachable", lambda host, port, timeout=3.0: hosts.append((host, port)) or True)
    datacheck.check_data(_data("cifar10"))  # missing but reachable: the trainer downloads it
    datacheck.check_data(_data("stl10"))
    assert hosts == [("www.cs.toronto.edu", 443), ("ai.stanford.edu", 80)]
    with pytest.raises(ConfigError, match=r"^STL-10 not found in .* data.download is false") as err:
        datacheck.check_data(_data("stl10", download=False))
    assert len(str(err.value).splitlines()) == 1
    monkeypatch.setattr(datacheck, "reachable", lambda *a, **k: False)
    with pytest.raises(ConfigError, match="STL-10 not found .* network is unreachable: put stl10_binary/"):
        datacheck.check_data(_data("stl10"))


@pytest.mark.parametrize(
    "name, layout, message",
    [
        ("tiny_imagenet", ["tiny-imagenet-200/wnids.txt", "tiny-imagenet-200/train/", "tiny-imagenet-200/val/"],
         "Tiny-ImageNet not found"),
        ("imagenet", ["train/", "val/"], "ImageNet not found"),
        ("stl10", [f"stl10_binary/{f}" for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")],
         "STL-10 not found"),
        ("cifar10", [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"],
         "CIFAR-10 not found"),
    ],
)  # fmt: skip
def test_check_data_layouts(tmp_path, monkeypatch, name, layout, message):
    monkeypatch.setattr(datacheck, "reachable", lambda *a, **k: False)
    root = tmp_path / name
    with pytest.raises(ConfigError, match=message) as err:
        datacheck.check_data(_data(name, root=str(root)))
    assert str(root) in str(err.value) and len(str(err.value).splitlines()) == 1
    for entry in layout:
        path = root / entry
        if entry.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    datacheck.check_data(_data(name, root=str(root)))


def test_check_data_fashion_mnist_and_image_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datacheck, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    with pytest.raises(ConfigError, match="Fashion-MNIST not found .*apt-get install dataset-fashion-mnist"):
        datacheck.check_data(_data("fashion_mnist"))
    raw = tmp_path / "fm" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for base in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f"{base}.gz").write_bytes(b"")
    datacheck.check_data(_data("fashion_mnist", root=str(tmp_path / "fm")))
    with pytest.raises(ConfigError, match="needs data.root"):
        datacheck.check_data(_data("imagefolder"))
    with pytest.raises(ConfigError, match="Image folder .* not found"):
        datacheck.check_data(_data("imagefolder", root=str(tmp_path / "pics")))
    (tmp_path / "pics").mkdir()
    with pytest.raises(ConfigError, match="no class sub-folders"):
        datacheck.check_data(_data("imagefolder", root=str(tmp_path / "pics")))
    (tmp_path / "pics" / "cat").mkdir()
    datacheck.check_data(_data("imagefolder", root=str(tmp_path / "pics")))


def test_reachable_says_no_on_a_closed_port_and_yes_on_an_open_one(monkeypatch):
    # No bound on the time taken (tests never depend on the clock). The timeouts are generous
    # guards, not expectations: reachable returns as soon as the connection is refused or opens,
    # and a short one could run out on a loaded machine before a local connection opens.
    import socket

    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)

    with socket.socket() as s:  # a port nobody listens on: bound, not listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert datacheck.reachable("127.0.0.1", port, timeout=60.0) is False
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert datacheck.reachable("127.0.0.1", server.getsockname()[1], timeout=60.0) is True
