"""Real-data loaders, exercised on tiny files written in each data set's published on-disk format."""

from __future__ import annotations

import gzip
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrdtui.train import datasets
from rrdtui.train.data import DataError, InMemoryData, StreamingData


def assert_one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any accidental real download fails at once instead of reaching out."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


# ---------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def cifar_batch(rng, n: int, classes: int, label_key: bytes) -> dict:
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, classes, n).tolist(),  # the real files store lists of ints
        b"batch_label": b"testing batch",
    }


def write_cifar100(folder: Path, rng) -> tuple[dict, dict]:
    train = cifar_batch(rng, 6, 100, b"fine_labels")
    test = cifar_batch(rng, 4, 100, b"fine_labels")
    write_pickle(folder / "train", train)
    write_pickle(folder / "test", test)
    names = [f"class{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20})
    return train, test


def write_cifar10(folder: Path, rng) -> tuple[list[dict], dict]:
    batches = [cifar_batch(rng, 2, 10, b"labels") for _ in range(5)]
    for i, batch in enumerate(batches, 1):
        write_pickle(folder / f"data_batch_{i}", batch)
    test = cifar_batch(rng, 3, 10, b"labels")
    write_pickle(folder / "test_batch", test)
    write_pickle(folder / "batches.meta", {b"label_names": [b"airplane", b"automobile"] + [b"x"] * 8})
    return batches, test


def test_cifar100_pickles_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    train, test = write_cifar100(tmp_path / "cifar-100-python", rng)
    data = datasets.load_cifar(str(tmp_path), 100, download=False)

    assert isinstance(data, InMemoryData)
    assert data.train_x.shape == (6, 3, 32, 32) and data.val_x.shape == (4, 3, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert data.train_x.is_contiguous()
    # Row layout is 1024 R, 1024 G, 1024 B bytes, each 32x32 row-major.
    assert np.array_equal(data.train_x[1, 2].numpy(), train[b"data"][1, 2048:].reshape(32, 32))
    assert np.array_equal(data.val_x.numpy().reshape(4, -1), test[b"data"])
    assert data.train_y.tolist() == train[b"fine_labels"]
    assert data.val_y.tolist() == test[b"fine_labels"]
    assert data.num_classes == 100 and data.augment == "crop_flip"
    assert data.mean == (0.5071, 0.4867, 0.4408) and data.std == (0.2675, 0.2565, 0.2761)
    assert data.class_names[:2] == ["class0", "class1"] and len(data.class_names) == 100


def test_cifar10_batches_concatenate_in_order(tmp_path):
    rng = np.random.default_rng(1)
    batches, test = write_cifar10(tmp_path / "cifar-10-batches-py", rng)
    # Pointing root straight at the batch folder works too.
    data = datasets.load_cifar(str(tmp_path / "cifar-10-batches-py"), 10, download=False)

    expected = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    assert np.array_equal(data.train_x.numpy(), expected)
    assert data.train_y.tolist() == sum((b[b"labels"] for b in batches), [])
    assert data.val_x.shape == (3, 3, 32, 32) and data.val_y.tolist() == test[b"labels"]
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.num_classes == 10
    assert data.class_names[:2] == ["airplane", "automobile"]


def test_cifar_missing_without_download(tmp_path):
    root = tmp_path / "nothing"
    with pytest.raises(DataError) as err:
        datasets.load_cifar(str(root), 100, download=False)
    message = assert_one_line_naming(err, root)
    assert "cifar-100-python" in message


def test_cifar_download_failure_is_data_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(self):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd.CIFAR100, "download", offline)
    root = tmp_path / "data" / "cifar100"
    with pytest.raises(DataError) as err:
        datasets.load_cifar(str(root), 100, download=True)
    message = assert_one_line_naming(err, root)
    assert "could not be downloaded" in message and "name resolution" in message


def test_cifar_download_then_load(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    rng = np.random.default_rng(2)

    def fake_download(self):  # writes the files where torchvision would extract them
        write_cifar10(Path(self.root) / "cifar-10-batches-py", rng)

    monkeypatch.setattr(tvd.CIFAR10, "download", fake_download)
    # torchvision then rejects our files' MD5 sums; the loader still finds and reads them.
    data = datasets.load_cifar(str(tmp_path), 10, download=True)
    assert data.train_x.shape == (10, 3, 32, 32)


def test_cifar_corrupt_pickle(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-100-python"
    write_cifar100(folder, rng)
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError) as err:
        datasets.load_cifar(str(tmp_path), 100, download=False)
    assert_one_line_naming(err, folder / "test")


def test_cifar_rejects_other_class_counts(tmp_path):
    with pytest.raises(DataError):
        datasets.load_cifar(str(tmp_path), 20, download=False)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (idx)
# ---------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, rng, gz: bool, dotted: bool = False) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 5).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3).astype(np.uint8),
    }
    for name, array in arrays.items():
        filename = name.replace("-idx", ".idx") if dotted else name
        payload = idx_bytes(array)
        if gz:
            (folder / (filename + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (folder / filename).write_bytes(payload)
    return arrays


@pytest.fixture
def no_debian_fashion(monkeypatch, tmp_path):
    """Hide the system copy so tests see only the files they write."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian-copy"))


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_fashion_mnist_idx_round_trip(tmp_path, gz, no_debian_fashion):
    arrays = write_idx_set(tmp_path / "fm", np.random.default_rng(4), gz)
    data = datasets.load_fashion_mnist(str(tmp_path / "fm"))

    assert data.train_x.shape == (5, 1, 28, 28) and data.val_x.shape == (3, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8 and data.val_y.dtype == torch.int64
    assert np.array_equal(data.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.val_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.val_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert data.num_classes == 10 and len(data.class_names) == 10
    assert data.mean == (0.2860,) and data.std == (0.3530,) and data.augment == "crop_flip"


def test_fashion_mnist_torchvision_layout_and_dotted_names(tmp_path, no_debian_fashion):
    arrays = write_idx_set(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(5), gz=False, dotted=True)
    data = datasets.load_fashion_mnist(str(tmp_path))
    assert np.array_equal(data.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])


def test_fashion_mnist_falls_back_to_system_copy(tmp_path, monkeypatch):
    arrays = write_idx_set(tmp_path / "system", np.random.default_rng(6), gz=True)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "system"))
    data = datasets.load_fashion_mnist(None)
    assert data.val_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_missing(tmp_path, no_debian_fashion):
    root = tmp_path / "empty"
    with pytest.raises(DataError) as err:
        datasets.load_fashion_mnist(str(root))
    assert "dataset-fashion-mnist" in assert_one_line_naming(err, root)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b"\x00\x00\x0d\x03" + b[4:],  # float type code instead of unsigned byte
        lambda b: b[:-7],  # truncated data
        lambda b: b[:6],  # truncated header
        lambda b: b"\x1f\x8b\x08" + b"garbage",  # gzip magic with a broken stream
    ],
    ids=["bad-magic", "short-data", "short-header", "broken-gzip"],
)
def test_fashion_mnist_corrupt_idx(tmp_path, corrupt, no_debian_fashion):
    folder = tmp_path / "fm"
    write_idx_set(folder, np.random.default_rng(7), gz=True)
    target = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(target.read_bytes())
    broken = corrupt(raw)
    target.write_bytes(broken if broken.startswith(b"\x1f\x8b") else gzip.compress(broken))
    with pytest.raises(DataError) as err:
        datasets.load_fashion_mnist(str(folder))
    assert_one_line_naming(err, target)


def test_fashion_mnist_label_count_mismatch(tmp_path, no_debian_fashion):
    folder = tmp_path / "fm"
    write_idx_set(folder, np.random.default_rng(8), gz=False)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, dtype=np.uint8)))
    with pytest.raises(DataError, match="do not belong together"):
        datasets.load_fashion_mnist(str(folder))


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_debian_package():
    data = datasets.load_fashion_mnist(None)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.val_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.uint8
    # The published set is balanced: 6000 train and 1000 test images per class.
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert torch.bincount(data.val_y).tolist() == [1000] * 10
    # Pixel mean matches the normalisation constant the loader reports.
    assert abs(data.train_x.float().mean().item() / 255 - data.mean[0]) < 1e-3


# ---------------------------------------------------------------------------------------------
# Image folders and ImageNet
# ---------------------------------------------------------------------------------------------

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def write_pngs(folder: Path, per_class: int, size=(40, 30), classes=COLOURS) -> None:
    for name, colour in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", size, colour).save(folder / name / f"{i}.png")


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(datasets.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(datasets.IMAGENET_STD).view(3, 1, 1)
    return (x * std + mean) * 255


def check_item_colour(dataset, i: int, classes: list[str]) -> None:
    x, y = dataset[i]
    colour = unnormalise(x).mean(dim=(1, 2))
    assert torch.allclose(colour, torch.tensor(COLOURS[classes[y]], dtype=torch.float32), atol=1.0)


def test_image_folder_split(tmp_path):
    write_pngs(tmp_path, per_class=4)
    data = datasets.load_image_folder(str(tmp_path), image_size=32, val_split=0.25, seed=0)

    assert isinstance(data, StreamingData)
    assert data.num_classes == 3 and data.class_names == ["cat", "dog", "emu"]
    assert len(data.train_set) == 9 and len(data.val_set) == 3
    x, y = data.val_set[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    for i in range(len(data.val_set)):
        check_item_colour(data.val_set, i, data.class_names)
    assert data.train_set[0][0].shape == (3, 32, 32)

    # Same seed, same split; the two sides never overlap.
    again = datasets.load_image_folder(str(tmp_path), image_size=32, val_split=0.25, seed=0)
    assert again.val_set.indices == data.val_set.indices
    assert not set(data.train_set.indices) & set(data.val_set.indices)


def test_image_folder_train_val(tmp_path):
    write_pngs(tmp_path / "train", per_class=2)
    # The val folder lacks "dog": labels must still follow the train folder's numbering.
    write_pngs(tmp_path / "val", per_class=1, classes={"cat": COLOURS["cat"], "emu": COLOURS["emu"]})
    data = datasets.load_image_folder(str(tmp_path), image_size=32, val_split=0.1, seed=0)

    assert len(data.train_set) == 6 and len(data.val_set) == 2
    assert sorted(y for _, y in data.val_set) == [0, 2]
    for i in range(len(data.val_set)):
        check_item_colour(data.val_set, i, data.class_names)


def test_image_folder_lone_train_folder_is_split(tmp_path):
    write_pngs(tmp_path / "train", per_class=2)
    data = datasets.load_image_folder(str(tmp_path), image_size=16, val_split=0.5, seed=3)
    assert data.class_names == ["cat", "dog", "emu"]
    assert len(data.train_set) == 3 and len(data.val_set) == 3
    assert data.val_set[0][0].shape == (3, 16, 16)


def test_image_folder_large_images_use_resized_crops(tmp_path):
    write_pngs(tmp_path, per_class=2, size=(90, 70))
    data = datasets.load_image_folder(str(tmp_path), image_size=64, val_split=0.5, seed=1)
    assert data.train_set[0][0].shape == (3, 64, 64)
    assert data.val_set[0][0].shape == (3, 64, 64)


def test_image_folder_missing(tmp_path):
    root = tmp_path / "photos"
    with pytest.raises(DataError) as err:
        datasets.load_image_folder(str(root), 32, 0.1, 0)
    assert_one_line_naming(err, root)


def test_image_folder_without_class_folders(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(DataError) as err:
        datasets.load_image_folder(str(tmp_path), 32, 0.1, 0)
    assert_one_line_naming(err, tmp_path)


def write_imagenet(root: Path) -> None:
    for split in ("train", "val"):
        for wnid, colour in (("n01440764", (10, 120, 200)), ("n01443537", (220, 120, 10))):
            (root / split / wnid).mkdir(parents=True)
            Image.new("RGB", (300, 260), colour).save(root / split / wnid / f"{split}_{wnid}_0.JPEG")


def test_imagenet_folders(tmp_path):
    write_imagenet(tmp_path)
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n")
    data = datasets.load_imagenet(str(tmp_path))
    assert data.num_classes == 2 and data.class_names == ["tench", "goldfish"]
    assert data.train_set[0][0].shape == (3, 224, 224)
    x, y = data.val_set[1]
    assert x.shape == (3, 224, 224) and y == 1


def test_imagenet_flat_val(tmp_path):
    write_imagenet(tmp_path)
    for wnid_dir in list((tmp_path / "val").iterdir()):
        for f in wnid_dir.iterdir():
            f.rename(tmp_path / "val" / f.name)
        wnid_dir.rmdir()
    with pytest.raises(DataError) as err:
        datasets.load_imagenet(str(tmp_path))
    assert "flat" in assert_one_line_naming(err, tmp_path / "val")


def test_imagenet_missing(tmp_path):
    with pytest.raises(DataError) as err:
        datasets.load_imagenet(str(tmp_path / "ilsvrc"))
    assert_one_line_naming(err, tmp_path / "ilsvrc")


# ---------------------------------------------------------------------------------------------
# STL-10
# ---------------------------------------------------------------------------------------------


def write_stl10(folder: Path, rng) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", 4), ("test", 3)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        labels = rng.integers(1, 11, n).astype(np.uint8)
        # The files store each channel column-major, i.e. transposed relative to C x H x W.
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        out[f"{split}_x"], out[f"{split}_y"] = images, labels
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return out


def test_stl10_binary_round_trip(tmp_path):
    arrays = write_stl10(tmp_path / "stl10_binary", np.random.default_rng(9))
    data = datasets.load_stl10(str(tmp_path), image_size=96, download=False)

    assert data.train_x.shape == (4, 3, 96, 96) and data.val_x.shape == (3, 3, 96, 96)
    assert data.train_x.dtype == torch.uint8
    assert np.array_equal(data.train_x.numpy(), arrays["train_x"])
    assert np.array_equal(data.val_x.numpy(), arrays["test_x"])
    assert data.train_y.tolist() == (arrays["train_y"].astype(int) - 1).tolist()
    assert data.class_names[0] == "airplane" and data.num_classes == 10


def test_stl10_resized_to_32(tmp_path):
    folder = tmp_path / "stl10_binary"
    write_stl10(folder, np.random.default_rng(10))
    # Replace the first training image by a flat colour: resizing must keep it exactly.
    pixels = np.fromfile(folder / "train_X.bin", dtype=np.uint8).reshape(4, 3, 96, 96)
    pixels[0] = np.array([12, 140, 250], dtype=np.uint8)[:, None, None]
    (folder / "train_X.bin").write_bytes(pixels.tobytes())

    data = datasets.load_stl10(str(folder), image_size=32, download=False)  # root = stl10_binary itself
    assert data.train_x.shape == (4, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.val_x.shape == (3, 3, 32, 32)
    assert data.train_x[0, :, 5, 7].tolist() == [12, 140, 250]


def test_stl10_download_failure(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(self):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tvd.STL10, "download", offline)
    with pytest.raises(DataError) as err:
        datasets.load_stl10(str(tmp_path / "stl"), 32, download=True)
    assert "could not be downloaded" in assert_one_line_naming(err, tmp_path / "stl")


def test_stl10_truncated(tmp_path):
    folder = tmp_path / "stl10_binary"
    write_stl10(folder, np.random.default_rng(11))
    (folder / "test_X.bin").write_bytes((folder / "test_X.bin").read_bytes()[:-100])
    with pytest.raises(DataError) as err:
        datasets.load_stl10(str(tmp_path), 32, download=False)
    assert_one_line_naming(err, folder / "test_X.bin")


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet
# ---------------------------------------------------------------------------------------------

TINY = {"n01443537": (250, 10, 10), "n01629819": (10, 250, 10), "n01641577": (10, 10, 250)}


def write_tiny(root: Path) -> Path:
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY) + "\n")
    (base / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")
    annotations = []
    for label, (wnid, colour) in enumerate(TINY.items()):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(2):
            Image.new("RGB", (64, 64), colour).save(images / f"{wnid}_{i}.JPEG", quality=95)
        Image.new("RGB", (64, 64), colour).save(base / "val" / "images" / f"val_{label}.JPEG", quality=95)
        annotations.append(f"val_{label}.JPEG\t{wnid}\t0\t0\t63\t63")
    # One greyscale image, as the real set has a few.
    Image.new("L", (64, 64), 128).save(base / "train" / "n01443537" / "images" / "n01443537_9.JPEG")
    # Listed out of class order, as in the real annotations.
    (base / "val" / "val_annotations.txt").write_text("\n".join(reversed(annotations)) + "\n")
    return base


def test_tiny_imagenet(tmp_path):
    write_tiny(tmp_path)
    data = datasets.load_tiny_imagenet(str(tmp_path), image_size=32)

    assert data.train_x.shape == (7, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.val_x.shape == (3, 3, 32, 32)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert data.val_y.tolist() == [2, 1, 0]
    assert data.num_classes == 3
    assert data.class_names == ["goldfish", "European fire salamander", "n01641577"]
    # Flat-colour JPEGs survive decoding and resizing within JPEG's rounding.
    for x, y in zip(data.val_x, data.val_y):
        expected = torch.tensor(list(TINY.values())[y], dtype=torch.float32)
        assert torch.allclose(x.float().mean(dim=(1, 2)), expected, atol=4)
    assert data.train_x[2].float().std(dim=0).max() < 1  # greyscale became three equal channels


def test_tiny_imagenet_native_size(tmp_path):
    base = write_tiny(tmp_path)
    data = datasets.load_tiny_imagenet(str(base), image_size=64)  # root = tiny-imagenet-200 itself
    assert data.train_x.shape == (7, 3, 64, 64)


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(DataError) as err:
        datasets.load_tiny_imagenet(str(tmp_path), 32)
    assert "tiny-imagenet-200" in assert_one_line_naming(err, tmp_path)


def test_tiny_imagenet_bad_annotation(tmp_path):
    base = write_tiny(tmp_path)
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DataError) as err:
        datasets.load_tiny_imagenet(str(tmp_path), 32)
    assert_one_line_naming(err, base / "val" / "val_annotations.txt")
