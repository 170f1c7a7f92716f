"""data.holdout: training images held out, stratified and fixed by data.data_seed, choose the best epoch
(val/*) while the data set's own validation split is reported as the test set (test/*); the probe
covers every class; data.train_limit cuts streamed folders too."""

from __future__ import annotations

import pytest
import torch

from rrdtui.config import ConfigError
from rrdtui.train.data import DataError, InMemoryData, StreamingData, load_data, stratified_indices
from rrdtui.train.loop import build
from rrdtui.train.sources import MemorySource, StreamSource

from conftest import TINY_DATA, config, run
from test_folder_cache import CLASSES, write_folder
from test_resume_exact import after, attempt, history, start

HOLDOUT = 40  # of TINY_DATA's 192 training images in 4 classes


def tiny(holdout: int = 0, **data):
    if holdout:
        data["holdout"] = holdout
    return config("holdout", data={**TINY_DATA, **data}, method={"name": "none"})


def image_rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(row.numpy()) for row in x.flatten(1)}


def assert_stratified(picked: torch.Tensor, labels: torch.Tensor, n: int) -> None:
    """Every class present, each within one image of its share of n."""
    counts, got = torch.bincount(labels), torch.bincount(picked, minlength=len(torch.bincount(labels)))
    assert int(got.sum()) == n and bool((got > 0).all())
    ideal = counts.double() * n / counts.sum()
    assert bool(((got - ideal).abs() < 1).all()), (got.tolist(), ideal.tolist())


def test_the_holdout_is_disjoint_from_what_is_trained_on_and_stratified():
    full = load_data(tiny().data)
    cfg = tiny(HOLDOUT)
    setup = build(cfg, device=torch.device("cpu"))
    data = setup.source.data
    assert setup.source.n_holdout == HOLDOUT and setup.source.n_train == 192 - HOLDOUT
    # The images trained on and the held-out ones part the training set between them.
    trained, held = image_rows(data.train_x), image_rows(data.holdout_x)
    assert not trained & held
    assert trained | held == image_rows(full.train_x)
    assert_stratified(data.holdout_y, full.train_y, HOLDOUT)


def test_the_holdout_is_carved_before_train_limit_cuts_the_rest():
    held = load_data(tiny(HOLDOUT).data)
    limited = load_data(tiny(HOLDOUT, train_limit=50).data)
    assert torch.equal(limited.holdout_x, held.holdout_x)  # the same held-out images, whatever the limit
    assert limited.train_x.shape[0] == 50
    assert image_rows(limited.train_x) <= image_rows(held.train_x)


def test_the_choice_follows_data_seed_and_nothing_else():
    labels = torch.arange(6).repeat_interleave(torch.tensor([50, 30, 20, 10, 6, 4]))
    first = stratified_indices(labels, 30, seed=0)
    assert torch.equal(stratified_indices(labels, 30, seed=0), first)
    assert not torch.equal(stratified_indices(labels, 30, seed=1), first)
    assert_stratified(labels[first], labels, 30)
    # The run's own seed does not move it.
    a = load_data(config("a", data={**TINY_DATA, "holdout": HOLDOUT}, method={"name": "none"}, seed=1).data)
    b = load_data(config("b", data={**TINY_DATA, "holdout": HOLDOUT}, method={"name": "none"}, seed=2).data)
    assert torch.equal(a.holdout_x, b.holdout_x)


def test_a_holdout_that_would_empty_a_class_is_refused():
    with pytest.raises(DataError) as err:
        load_data(tiny(189).data)
    assert "data.holdout" in str(err.value) and "at most 188" in str(err.value) and "\n" not in str(err.value)
    load_data(tiny(188).data)  # one image of each class is left to train on
    with pytest.raises(ConfigError, match="data.holdout must be >= 0"):
        tiny(-1)


def test_a_run_with_a_holdout_chooses_on_it_and_reports_the_test_set(tmp_path):
    store, run_id, outcome = run(tmp_path, tiny(HOLDOUT))
    assert outcome.status == "completed"
    val = [v for _, _, v in store.series(run_id, "val/acc")]
    test = [v for _, _, v in store.series(run_id, "test/acc")]
    assert len(val) == len(test) == 3 and len(store.series(run_id, "test/loss")) == 3
    assert store.get_run(run_id)["best_acc"] == pytest.approx(max(val))
    assert outcome.final["best_acc"] == pytest.approx(max(val))
    # Accuracies over 40 held-out images are multiples of 2.5%; the test set has 96 images.
    assert all(abs(v / 2.5 - round(v / 2.5)) < 1e-9 for v in val)
    best = torch.load(tmp_path / "runs" / run_id / "best.pt", weights_only=True)
    assert best["val_acc"] == pytest.approx(max(val))


def test_a_run_without_a_holdout_has_no_test_rows(tmp_path):
    store, run_id, outcome = run(tmp_path, tiny())
    assert outcome.status == "completed"
    assert len(store.series(run_id, "val/acc")) == 3
    assert not any(name.startswith("test/") for name in store.metric_names(run_id))


def test_a_resumed_run_keeps_its_holdout(tmp_path):
    cfg = tiny(HOLDOUT)
    store, straight = start(tmp_path / "straight", cfg)
    assert attempt(store, straight, cfg, None) == "completed"
    cut_store, cut = start(tmp_path / "cut", cfg)
    # 152 images in batches of 32: 5 steps an epoch; the flag is read before training (call 1), after
    # steps 1-5 (calls 2-6), at the epoch's end (7), then after step 6 (8): stopped mid-epoch 2.
    assert attempt(cut_store, cut, cfg, None, stop_flag=after(8, lambda: True)) == "stopped"
    assert attempt(cut_store, cut, cfg, None, resume=True) == "completed"
    got, want = history(cut_store, cut), history(store, straight)
    assert got.keys() == want.keys() and "test/acc" in want
    for name in want:
        assert [s for s, _ in got[name]] == [s for s, _ in want[name]], name
        assert [v for _, v in got[name]] == pytest.approx([v for _, v in want[name]], rel=1e-6, abs=1e-9), name


# ---------------------------------------------------------------------------------------------
# Streamed folders (images of 64 pixels and more are not cached in memory)
# ---------------------------------------------------------------------------------------------


def folder_config(root, **data):
    keys = {"name": "imagefolder", "root": str(root), "image_size": 64, "workers": 0, "probe_size": 4, **data}
    return config("folder", data=keys, method={"name": "none"})


def test_a_streamed_folder_holds_out_without_augmentation(tmp_path):
    write_folder(tmp_path, per_class=5, size=(64, 64), split="train")
    write_folder(tmp_path, per_class=2, size=(64, 64), seed=1, split="val")
    data = load_data(folder_config(tmp_path, holdout=8).data)
    assert isinstance(data, StreamingData)
    held, trained = data.holdout_set, data.train_set
    assert len(held) == 8 and len(trained) == 12
    assert not set(held.indices) & set(trained.indices)
    assert held.transform is data.val_set.transform  # evaluated like validation images
    assert torch.equal(held[0][0], held[0][0])  # no random crop or flip
    assert_stratified(torch.tensor(held.targets), torch.arange(4).repeat_interleave(5), 8)
    again = load_data(folder_config(tmp_path, holdout=8).data)
    other = load_data(folder_config(tmp_path, holdout=8, data_seed=5).data)
    assert again.holdout_set.indices == held.indices and other.holdout_set.indices != held.indices

    setup = build(folder_config(tmp_path, holdout=8), device=torch.device("cpu"))
    assert isinstance(setup.source, StreamSource) and setup.source.n_holdout == 8
    assert sum(y.shape[0] for _, y in setup.source.holdout()) == 8


def test_train_limit_cuts_a_streamed_folder(tmp_path):
    write_folder(tmp_path, per_class=5, size=(64, 64), split="train")
    write_folder(tmp_path, per_class=1, size=(64, 64), seed=1, split="val")
    limited = load_data(folder_config(tmp_path, train_limit=7).data)
    assert isinstance(limited, StreamingData) and len(limited.train_set) == 7
    assert load_data(folder_config(tmp_path, train_limit=7).data).train_set.indices == limited.train_set.indices
    other = load_data(folder_config(tmp_path, train_limit=7, data_seed=3).data)
    assert other.train_set.indices != limited.train_set.indices


# ---------------------------------------------------------------------------------------------
# The similarity probe
# ---------------------------------------------------------------------------------------------


def test_the_probe_of_a_class_sorted_validation_set_covers_every_class():
    data = load_data(tiny().data)
    order = torch.argsort(data.val_y, stable=True)  # sorted by class, as a folder lists its images
    data.val_x, data.val_y = data.val_x[order], data.val_y[order]
    source = MemorySource(data, torch.device("cpu"), 32, 64)
    x, y = source.probe(8, seed=0)
    assert x.shape[0] == 8 and set(y.tolist()) == {0, 1, 2, 3}
    again, _ = source.probe(8, seed=0)
    assert torch.equal(again, x)  # the same images for every run of the data


def test_the_probe_of_a_streamed_folder_covers_every_class(tmp_path):
    write_folder(tmp_path, per_class=2, size=(64, 64), split="train")
    write_folder(tmp_path, per_class=3, size=(64, 64), seed=1, split="val")  # listed class by class
    setup = build(folder_config(tmp_path), device=torch.device("cpu"))
    _, y = setup.source.probe(4, seed=0)
    assert sorted(y.tolist()) == list(range(len(CLASSES)))


def test_a_cached_folder_holds_out_in_memory(tmp_path):
    write_folder(tmp_path, per_class=6, split="train")
    write_folder(tmp_path, per_class=2, seed=1, split="val")
    data = load_data(folder_config(tmp_path, image_size=16, holdout=8).data)
    assert isinstance(data, InMemoryData) and data.holdout_x.shape == (8, 3, 16, 16)
    assert data.train_x.shape[0] == 16 and set(data.holdout_y.tolist()) == {0, 1, 2, 3}
    assert not image_rows(data.train_x) & image_rows(data.holdout_x)
