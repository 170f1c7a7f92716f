"""Folders of small images are decoded once, cached beside the data, and trained in memory like CIFAR;
a changed folder is decoded again; folders of large images keep streaming."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrdtui.train import datasets
from rrdtui.train.data import DataError, InMemoryData, StreamingData, load_data

from conftest import config, run

CLASSES = ["ant", "bee", "cat", "dog"]


def write_folder(root: Path, per_class: int, size=(20, 14), seed: int = 0, split: str | None = None) -> None:
    """Noisy images, tinted by class, as root[/split]/<class>/<i>.png (every image distinct)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = root / split / name if split else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (size[1], size[0], 3), dtype=np.uint8)
            pixels[..., label % 3] += 120
            Image.fromarray(pixels).save(folder / f"{i}.png")


def data_config(root: Path, **keys):
    data = {"name": "imagefolder", "root": str(root), "image_size": 16, "workers": 0, **keys}
    return config("folder", data=data, method={"name": "none"}).data


def cache_files(root: Path) -> list[Path]:
    return sorted(root.glob(".rrdtui-cache-*.pt"))


def test_a_small_folder_is_decoded_once_and_read_back_from_its_cache(tmp_path):
    write_folder(tmp_path / "photos", per_class=6)
    first = load_data(data_config(tmp_path / "photos", val_split=0.25))
    assert isinstance(first, InMemoryData) and first.augment == "crop_flip"
    assert first.crop_padding == 2  # 16 // 8, as the streamed folder's RandomCrop pads
    assert first.train_x.shape == (18, 3, 16, 16) and first.val_x.shape == (6, 3, 16, 16)
    assert first.class_names == CLASSES

    [cache] = cache_files(tmp_path / "photos")
    built = cache.stat()
    again = load_data(data_config(tmp_path / "photos", val_split=0.25))
    # Read, not rebuilt: a rebuild renames a new file over it (another inode, another mtime).
    assert cache.stat().st_ino == built.st_ino and cache.stat().st_mtime_ns == built.st_mtime_ns
    assert cache_files(tmp_path / "photos") == [cache]
    for name in ("train_x", "train_y", "val_x", "val_y"):
        assert torch.equal(getattr(again, name), getattr(first, name)), name


def test_cached_pixels_are_the_streamed_validation_images(tmp_path):
    """The cache holds what the streaming loader's validation transform sees (resize, centre crop)."""
    write_folder(tmp_path, per_class=3, size=(24, 18), split="train")
    write_folder(tmp_path, per_class=2, size=(18, 24), seed=1, split="val")
    streamed = datasets.load_image_folder(str(tmp_path), 16, 0.1, 0)
    cached = load_data(data_config(tmp_path))
    assert isinstance(streamed, StreamingData) and isinstance(cached, InMemoryData)
    assert cached.val_y.tolist() == streamed.val_set.targets
    mean = torch.tensor(datasets.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(datasets.IMAGENET_STD).view(3, 1, 1)
    for i in range(len(streamed.val_set)):
        x, _ = streamed.val_set[i]
        pixels = (x * std + mean) * 255
        assert torch.allclose(pixels, cached.val_x[i].float(), atol=0.01)


def test_a_changed_file_is_decoded_again(tmp_path):
    root = tmp_path / "photos"
    write_folder(root, per_class=4)
    before = load_data(data_config(root, val_split=0.25))
    [old] = cache_files(root)

    # One image replaced by a black one with a modification time of its own.
    changed = root / "cat" / "1.png"
    Image.new("RGB", (20, 14)).save(changed)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = load_data(data_config(root, val_split=0.25))

    [new] = cache_files(root)
    assert new != old and not old.exists()  # a new key; the stale cache is gone
    assert not torch.equal(torch.cat([after.train_x, after.val_x]), torch.cat([before.train_x, before.val_x]))
    # The black image is among the decoded ones.
    assert (torch.cat([after.train_x, after.val_x]).flatten(1).amax(1) == 0).sum() == 1


def test_a_folder_that_takes_no_cache_file_caches_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "photos"
    write_folder(root, per_class=3, split="train")
    write_folder(root, per_class=1, split="val", seed=1)
    fresh = load_data(data_config(root))
    [cache] = cache_files(root)
    cache.unlink()
    # A folder where the file goes: it cannot be written there (as in a read-only folder, even as root).
    cache.mkdir()

    first = load_data(data_config(root))
    [user_cache] = (tmp_path / "xdg" / "rrdtui").glob("folder-*-16px-*.pt")
    built = user_cache.stat()
    again = load_data(data_config(root))
    assert user_cache.stat().st_ino == built.st_ino and user_cache.stat().st_mtime_ns == built.st_mtime_ns
    for data in (first, again):
        assert torch.equal(data.train_x, fresh.train_x) and torch.equal(data.val_x, fresh.val_x)


def test_large_images_keep_streaming(tmp_path):
    write_folder(tmp_path, per_class=2, size=(70, 70))
    data = load_data(data_config(tmp_path, image_size=64, val_split=0.5))
    assert isinstance(data, StreamingData)
    assert cache_files(tmp_path) == []


def test_a_folder_over_the_memory_budget_keeps_streaming(tmp_path, monkeypatch):
    write_folder(tmp_path, per_class=2)
    monkeypatch.setattr(datasets, "FOLDER_CACHE_MAX_BYTES", 8 * 3 * 16 * 16 - 1)  # one image short
    assert isinstance(load_data(data_config(tmp_path, val_split=0.5)), StreamingData)


def test_an_undecodable_image_is_one_line(tmp_path):
    write_folder(tmp_path, per_class=2)
    (tmp_path / "bee" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        load_data(data_config(tmp_path, val_split=0.5))
    assert "\n" not in str(err.value) and "0.png" in str(err.value)


def test_training_on_a_cached_folder_runs_end_to_end(tmp_path):
    write_folder(tmp_path / "photos", per_class=12)
    root = str(tmp_path / "photos")
    cfg = config(
        "folder-run",
        data={"name": "imagefolder", "root": root, "image_size": 16, "val_split": 0.25, "probe_size": 8},
        student={"arch": "resnet8"},
        method={"name": "none"},
        train={"epochs": 2, "batch_size": 12, "device": "cpu", "log_every": 2},
    )
    store, run_id, outcome = run(tmp_path, cfg)
    assert outcome.status == "completed"
    assert len(store.series(run_id, "val/acc")) == 2
    assert store.series(run_id, "train/throughput")
    assert len(cache_files(tmp_path / "photos")) == 1
