"""A method that cannot pair its student with its teacher is refused in one line before any run row."""

from __future__ import annotations

import subprocess
import sys

from rrdtui.store import Store

from conftest import TINY_DATA, TINY_TRAIN, write_preset


def test_an_impossible_pairing_is_one_line_and_no_run_row(tmp_path):
    write_preset(tmp_path, "vgg_teacher", data=TINY_DATA, student={"arch": "vgg8"}, method={"name": "none"}, optim={"milestones": [1]}, train=TINY_TRAIN)
    student = write_preset(
        tmp_path, "fsp_student", data=TINY_DATA, teacher={"preset": "vgg_teacher.yaml"},
        student={"arch": "resnet8"}, method={"name": "fsp"}, optim={"milestones": [1]}, train=TINY_TRAIN,
    )  # fmt: skip
    runs = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "rrdtui.cli", "run", str(student), "--runs", str(runs)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("rrdtui: error: method fsp: FSP needs the same channel count")
    assert Store(runs).list_runs() == []
