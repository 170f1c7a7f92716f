"""Planning and stopping runs, without starting a trainer."""

from __future__ import annotations

import os
import socket

import pytest

from rrdtui.config import ConfigError, load_preset
from rrdtui.launcher import create_runs, plan_runs, request_stop, resume_chain
from rrdtui.store import Store, StoreError


def test_plan_trains_a_missing_teacher_first_and_reuses_a_completed_one(tiny_presets, tmp_path):
    store = Store(tmp_path / "runs")
    cfg = load_preset(tiny_presets["student"])
    plan = plan_runs(cfg, str(tiny_presets["student"]), store)
    assert [r.config.name for r in plan.runs] == ["tiny_teacher", "tiny_student"]
    assert plan.runs[1].teacher_index == 0 and cfg.teacher.arch == "resnet14"
    teacher_id, student_id = create_runs(plan, store)
    assert store.get_run(student_id)["teacher_run"] == teacher_id

    store.update_run(teacher_id, status="completed", best_acc=50.0)
    again = plan_runs(load_preset(tiny_presets["student"]), "s", store)
    assert [r.config.name for r in again.runs] == ["tiny_student"] and again.runs[0].teacher_run == teacher_id
    assert any("reused from run" in n for n in again.notes)


def test_teacher_of_another_data_set_is_refused(tiny_presets, tmp_path):
    cfg = load_preset(tiny_presets["student"], ["data.num_classes=5", "data.name=cifar10"])
    with pytest.raises(ConfigError, match="teacher.preset trains on 'synthetic'"):
        plan_runs(cfg, "s", Store(tmp_path / "runs"))


def test_stopping_a_queued_run_cancels_it_without_signalling_its_process(tiny_presets, tmp_path):
    store = Store(tmp_path / "runs")
    cfg = load_preset(tiny_presets["student"])
    teacher_id, student_id = create_runs(plan_runs(cfg, "s", store), store)
    # The queued student belongs to a live process (this one): a SIGTERM would end the test run.
    store.update_run(student_id, pid=os.getpid(), host=socket.gethostname())
    assert request_stop(store, student_id[:6]) == student_id
    row = store.get_run(student_id)
    assert row["status"] == "stopped" and row["error"] == "stopped before it started"
    with pytest.raises(StoreError, match="is stopped, not running"):
        request_stop(store, student_id)


def test_resume_chain_puts_an_unfinished_teacher_first(tiny_presets, tmp_path):
    store = Store(tmp_path / "runs")
    teacher_id, student_id = create_runs(plan_runs(load_preset(tiny_presets["student"]), "s", store), store)
    store.update_run(teacher_id, status="crashed")
    store.update_run(student_id, status="stopped")
    assert resume_chain(store, student_id) == [teacher_id, student_id]
    store.update_run(teacher_id, status="completed")
    assert resume_chain(store, student_id) == [student_id]
    store.update_run(student_id, status="completed")
    with pytest.raises(StoreError, match="only stopped, crashed or failed runs resume"):
        store.claim(resume_chain(store, student_id))


def test_a_stop_that_lands_before_the_trainer_starts_the_run_is_kept(tiny_presets, tmp_path):
    # The window that lost stops: the trainer has read the row (queued), the stop cancels it, then
    # the trainer starts the run. The start must not reset the stop.
    from rrdtui.store import RunReporter

    store = Store(tmp_path / "runs")
    (run_id,) = create_runs(plan_runs(load_preset(tiny_presets["teacher"]), "t", store), store)
    request_stop(store, run_id)
    reporter = RunReporter(store, run_id)
    assert not reporter.start()
    row = store.get_run(run_id)
    assert row["status"] == "stopped" and row["stop_requested"] == 1
