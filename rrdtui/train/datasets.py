"""Loaders for the real data sets, each reading the format the data set is published in.

Small data sets (CIFAR, Fashion-MNIST, STL-10, Tiny-ImageNet, folders of small images) are decoded
once into uint8 tensors (``InMemoryData``) so the trainer can keep them on the device and augment
whole batches there; a folder's decoded images are cached beside it. Folder data sets too large for
memory (ImageNet, folders of large images) become torch Datasets that decode, augment and normalise
per item (``StreamingData``).

Every failure a user can fix (a missing folder, a corrupt file, no network for a download) is
raised as ``DataError`` with a single line naming what is missing and how to provide it, because
the message is shown as-is in the terminal UI and in the run's log.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import socket
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from rrdtui.train import checkpoint
from rrdtui.train.data import DataError, InMemoryData, StreamingData

log = logging.getLogger("rrdtui.train")

# ImageNet statistics: used for every data set of natural photographs without its own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FASHION_MEAN = (0.2860,)
FASHION_STD = (0.3530,)

# Where the Debian package ``dataset-fashion-mnist`` installs the four gzipped idx files
# (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
# t10k-labels-idx1-ubyte.gz). A module constant so tests can point it elsewhere.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

# A download with no network can otherwise block on a socket for minutes before failing.
DOWNLOAD_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------------------------------
# Small shared helpers
# ---------------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """An exception as a short single line, for embedding in a DataError message."""
    text = " ".join(str(exc).split())  # collapse newlines: the message must stay one line
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _try_download(fetch: Callable[[], object]) -> str | None:
    """Run a torchvision download; return None on success or the failure reason.

    torchvision's constructors verify MD5 sums after downloading and raise if anything is off,
    so a failure here does not prove the files are absent: callers look for them again.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        fetch()
        return None
    except Exception as exc:  # URLError, OSError, RuntimeError (bad checksum), ...
        return _reason(exc)
    finally:
        socket.setdefaulttimeout(previous)


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and integer labels as contiguous torch tensors (uint8, int64)."""
    return (
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)),
        torch.from_numpy(np.asarray(y, dtype=np.int64).copy()),
    )


def _resize_uint8(x: torch.Tensor, size: int, chunk: int = 1000) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 N x C x H x W batch to size x size, kept uint8.

    Works in chunks so a few thousand 96x96 images never need a multi-GB float copy at once.
    """
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=torch.uint8)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].float()
        part = torch.nn.functional.interpolate(
            part, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + chunk] = part.round().clamp(0, 255).to(torch.uint8)
    return out


def _read_wnid_names(path: Path) -> dict[str, str]:
    """wnid -> short readable name from words.txt / LOC_synset_mapping.txt, if the file exists.

    Both files hold "n01440764<whitespace>tench, Tinca tinca" per line; the first synonym is kept.
    """
    names: dict[str, str] = {}
    if not path.is_file():
        return names
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            names[parts[0]] = parts[1].split(",")[0].strip()
    return names


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle version)
# ---------------------------------------------------------------------------------------------

_CIFAR = {
    10: dict(
        name="CIFAR-10",
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        meta="batches.meta",
        label_key="labels",
        names_key="label_names",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    ),
    100: dict(
        name="CIFAR-100",
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        meta="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    ),
}


def _cifar_folder(root: Path, spec: dict) -> Path | None:
    """The folder holding the batches: root/<folder>, or root itself if the user pointed there."""
    for folder in (root / spec["folder"], root):
        if all((folder / f).is_file() for f in spec["train"] + spec["test"]):
            return folder
    return None


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        # encoding="bytes" is how the files were written (Python 2); keys come back as bytes.
        return pickle.load(f, encoding="bytes")


def _key(entry: dict, key: str):
    """Look a key up as bytes (our reader) or str (files re-saved with encoding='latin1')."""
    if key.encode() in entry:
        return entry[key.encode()]
    return entry[key]


def _read_cifar_batches(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        try:
            entry = _unpickle(path)
            data = np.asarray(_key(entry, "data"), dtype=np.uint8)
            batch_labels = np.asarray(_key(entry, label_key), dtype=np.int64)
        except Exception as exc:
            raise DataError(
                f"{path} is not a readable CIFAR batch ({_reason(exc)}); delete it and download again"
            ) from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != data.shape[0]:
            raise DataError(
                f"{path} has unexpected shapes (data {data.shape}, {len(batch_labels)} labels); "
                "delete it and download again"
            )
        # Rows are 3072 bytes: 1024 red, then green, then blue, each row-major 32x32 = CHW.
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _cifar_class_names(folder: Path, spec: dict) -> list[str] | None:
    path = folder / spec["meta"]
    if not path.is_file():
        return None  # names are a nicety; the batches are what matters
    try:
        names = _key(_unpickle(path), spec["names_key"])
    except Exception:
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(root: str, classes: int, download: bool) -> InMemoryData:
    """CIFAR-10 or CIFAR-100 from the python pickle files under ``root``, downloading if allowed."""
    if classes not in _CIFAR:
        raise DataError(f"CIFAR has 10 or 100 classes, not {classes}; set data.name to cifar10 or cifar100")
    spec = _CIFAR[classes]
    root_path = Path(root).expanduser()
    folder = _cifar_folder(root_path, spec)
    expected = f"{spec['folder']}/ with {', '.join(spec['train'] + spec['test'])}"

    if folder is None and download:
        import torchvision.datasets as tvd

        dataset_cls = tvd.CIFAR10 if classes == 10 else tvd.CIFAR100
        failure = _try_download(lambda: dataset_cls(root=str(root_path), train=True, download=True))
        folder = _cifar_folder(root_path, spec)
        if folder is None:
            raise DataError(
                f"{spec['name']} not found in {root_path} and it could not be downloaded ({failure or 'no files'}). "
                f"Put the python version ({expected}) there, or set data.root."
            )
    if folder is None:
        raise DataError(
            f"{spec['name']} not found in {root_path} (downloading is off). "
            f"Put the python version ({expected}) there, set data.root, or allow downloading."
        )

    train_x, train_y = _to_tensors(*_read_cifar_batches(folder, spec["train"], spec["label_key"]))
    val_x, val_y = _to_tensors(*_read_cifar_batches(folder, spec["test"], spec["label_key"]))
    return InMemoryData(
        name=f"cifar{classes}",
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        num_classes=classes,
        mean=spec["mean"],
        std=spec["std"],
        augment="crop_flip",
        class_names=_cifar_class_names(folder, spec),
    )


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (idx format)
# ---------------------------------------------------------------------------------------------

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _idx_candidates(base: str) -> list[str]:
    """Names one idx file is found under: raw or gzipped, and the 'train-images.idx3-ubyte'
    spelling some mirrors use."""
    dotted = base.replace("-idx", ".idx")
    return [base, base + ".gz", dotted, dotted + ".gz"]


def _find_idx_files(folder: Path) -> dict[str, Path] | None:
    """All four idx files in ``folder`` (any accepted spelling), or None if any is missing."""
    found: dict[str, Path] = {}
    for role, base in _IDX_FILES.items():
        for name in _idx_candidates(base):
            if (folder / name).is_file():
                found[role] = folder / name
                break
        else:
            return None
    return found


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an idx file (optionally gzipped) of unsigned bytes with ``ndim`` dimensions.

    Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
    big-endian int32 per dimension; the data follows and must be exactly the product of the dims.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # includes gzip.BadGzipFile and truncated archives
        raise DataError(f"{path} cannot be read ({_reason(exc)}); replace it with an intact copy") from None

    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an idx file; replace it with an intact copy")
    zero1, zero2, type_code, dims = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or type_code != 0x08 or dims != ndim:
        raise DataError(
            f"{path} is not an idx{ndim} file of unsigned bytes (magic {raw[:4].hex()}, expected "
            f"0000080{ndim}); replace it with an intact copy"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} has a truncated idx header; replace it with an intact copy")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    expected = int(np.prod(shape))
    if any(d < 0 for d in shape) or len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data but its header {shape} needs {expected}; "
            "replace it with an intact copy"
        )
    # A copy: frombuffer over bytes is read-only, and torch tensors over it must be writable.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels; "
            "the files do not belong together"
        )
    if labels.size and labels.max() >= len(FASHION_CLASSES):
        raise DataError(f"{labels_path} has label {labels.max()}, Fashion-MNIST has 10 classes; wrong file?")
    return images[:, None], labels  # N x 1 x H x W


def load_fashion_mnist(root: str | None) -> InMemoryData:
    """Fashion-MNIST from idx files: in ``root`` (or its torchvision layout), else the Debian copy."""
    folders: list[Path] = []
    if root:
        base = Path(root).expanduser()
        folders += [base, base / "FashionMNIST" / "raw", base / "raw"]
    folders.append(Path(DEBIAN_FASHION_MNIST))

    for folder in folders:
        files = _find_idx_files(folder)
        if files is not None:
            break
    else:
        searched = ", ".join(str(f) for f in folders)
        raise DataError(
            f"Fashion-MNIST not found (searched {searched}). Install it with "
            "'apt-get install dataset-fashion-mnist' or put the four idx files "
            "(train-images-idx3-ubyte[.gz], ...) in a folder and set data.root to it."
        )

    train_x, train_y = _to_tensors(*_read_idx_split(files["train_images"], files["train_labels"]))
    val_x, val_y = _to_tensors(*_read_idx_split(files["test_images"], files["test_labels"]))
    return InMemoryData(
        name="fashion_mnist",
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        num_classes=10,
        mean=FASHION_MEAN,
        std=FASHION_STD,
        # 28x28 is kept as is: the CIFAR networks end in global pooling, so they accept it.
        augment="crop_flip",
        class_names=list(FASHION_CLASSES),
    )


# ---------------------------------------------------------------------------------------------
# Image folders and ImageNet (streamed from disk)
# ---------------------------------------------------------------------------------------------


# Below this image size folder data sets are trained with the CIFAR recipe (see folder_transforms).
SMALL_IMAGE_SIZE = 64


def folder_transforms(image_size: int):
    """(train, val) torchvision transforms for photographs at ``image_size``.

    Large images get the standard ImageNet recipe (RandomResizedCrop; Resize to size/0.875 then
    CenterCrop). Small ones get the CIFAR recipe instead: RandomResizedCrop throws away too much
    of a 32-pixel image, so they are resized and randomly cropped with padding.
    """
    from torchvision import transforms as T

    normalise = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if image_size >= SMALL_IMAGE_SIZE:
        train = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
        val = [T.Resize(int(round(image_size / 0.875))), T.CenterCrop(image_size)]
    else:
        train = [
            T.Resize(image_size),
            T.RandomCrop(image_size, padding=image_size // 8),
            T.RandomHorizontalFlip(),
        ]
        val = _small_geometry(image_size)
    return T.Compose(train + normalise), T.Compose(val + normalise)


def _small_geometry(image_size: int) -> list:
    """A small image's fixed geometry: shorter side to image_size, centre crop (no augmentation)."""
    from torchvision import transforms as T

    return [T.Resize(image_size), T.CenterCrop(image_size)]


def _image_folder(root: Path, transform, classes: list[str] | None = None):
    """A torchvision ImageFolder. With ``classes`` given (the train folder's), labels are renumbered
    to follow that list, so a val folder missing a class still numbers the others like train does."""
    from torchvision.datasets import ImageFolder  # lazily: torchvision takes seconds to import

    if classes is None:
        return ImageFolder(str(root), transform=transform)
    folder = ImageFolder(str(root), transform=transform, allow_empty=True)
    index = {c: i for i, c in enumerate(classes)}
    folder.samples = [(path, index[folder.classes[t]]) for path, t in folder.samples]
    folder.imgs = folder.samples
    folder.targets = [t for _, t in folder.samples]
    folder.classes, folder.class_to_idx = list(classes), index
    return folder


class TransformedSubset(torch.utils.data.Dataset):
    """Part of an untransformed ImageFolder, with its own transform (train vs. val of a split)."""

    def __init__(self, base, indices: Sequence[int], transform):
        self.base = base
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> list[int]:
        """Labels without opening any image (CRD's sampler needs every sample's class)."""
        return [self.base.samples[i][1] for i in self.indices]

    def __getitem__(self, i: int):
        path, target = self.base.samples[self.indices[i]]
        return self.transform(self.base.loader(path)), target


def folder_subset(dataset, indices: Sequence[int], transform=None) -> TransformedSubset:
    """Items ``indices`` of an ImageFolder or a TransformedSubset, with its transform unless one is given."""
    if isinstance(dataset, TransformedSubset):
        return TransformedSubset(dataset.base, [dataset.indices[i] for i in indices], transform or dataset.transform)
    return TransformedSubset(dataset, indices, transform or dataset.transform)


def _samples(dataset) -> list[tuple[str, int]]:
    """(path, label) of every item of an ImageFolder or a TransformedSubset, in item order."""
    if isinstance(dataset, TransformedSubset):
        return [dataset.base.samples[i] for i in dataset.indices]
    return list(dataset.samples)


def _class_dirs(folder: Path) -> list[str]:
    # Every sub-folder, hidden ones included, exactly as ImageFolder counts classes.
    return sorted(d.name for d in folder.iterdir() if d.is_dir())


def _open_folder(root: Path, transform, what: str, classes: list[str] | None = None):
    """ImageFolder with its errors (no class folders, no images) turned into DataError."""
    try:
        return _image_folder(root, transform, classes)
    except (FileNotFoundError, OSError, RuntimeError) as exc:
        raise DataError(
            f"{what}: no images in class sub-folders of {root} ({_reason(exc)}); "
            f"lay it out as {root}/<class>/<image>"
        ) from None


def _split_indices(count: int, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic random train/val split of ``count`` items."""
    n_val = int(round(count * val_split))
    n_val = min(max(n_val, 1), count - 1)  # both sides need at least one image
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def _streaming_from_folders(
    root: Path, name: str, what: str, image_size: int, val_split: float | None, seed: int,
    class_names: Callable[[list[str]], list[str]] | None = None,
) -> StreamingData:
    train_tf, val_tf = folder_transforms(image_size)
    train_dir, val_dir = root / "train", root / "val"

    if train_dir.is_dir() and val_dir.is_dir():
        train_set = _open_folder(train_dir, train_tf, what)
        classes = list(train_set.classes)
        extra = sorted(set(_class_dirs(val_dir)) - set(classes))
        if extra:
            raise DataError(
                f"{what}: {val_dir} has class folders not in {train_dir} ({', '.join(extra[:5])}); "
                "give both the same class folders"
            )
        if not _class_dirs(val_dir):
            raise DataError(
                f"{what}: {val_dir} has no class sub-folders; sort its images into {val_dir}/<class>/"
            )
        val_set = _open_folder(val_dir, val_tf, what, classes)
        if len(val_set) == 0:
            raise DataError(f"{what}: no images found under {val_dir}/<class>/")
    elif val_split is None:
        raise DataError(f"{what} not found: {root} needs train/ and val/ folders of class sub-folders; set data.root")
    else:
        if not 0.0 < val_split < 1.0:
            raise DataError(f"data.val_split must be between 0 and 1, not {val_split}")
        # A lone train/ folder is split itself; otherwise "train" would be taken for a class.
        base = _open_folder(train_dir if train_dir.is_dir() else root, None, what)
        if len(base) < 2:
            raise DataError(f"{what}: {root} has {len(base)} image(s); at least 2 are needed to split")
        classes = list(base.classes)
        train_idx, val_idx = _split_indices(len(base), val_split, seed)
        train_set = TransformedSubset(base, train_idx, train_tf)
        val_set = TransformedSubset(base, val_idx, val_tf)

    return StreamingData(
        name=name,
        train_set=train_set,
        val_set=val_set,
        num_classes=len(classes),
        class_names=class_names(classes) if class_names else classes,
    )


def load_image_folder(root: str, image_size: int, val_split: float, seed: int) -> StreamingData:
    """Any folder of class sub-folders; uses root/train and root/val if both exist, else splits."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(
            f"Image folder {root_path} not found. Point data.root at a folder of class sub-folders "
            "(optionally split into train/ and val/)."
        )
    return _streaming_from_folders(root_path, "folder", "Image folder", image_size, val_split, seed)


def load_imagenet(root: str) -> StreamingData:
    """ILSVRC-2012 as root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG, 224-pixel crops."""
    root_path = Path(root).expanduser()
    train_dir, val_dir = root_path / "train", root_path / "val"
    if not (train_dir.is_dir() and val_dir.is_dir()):
        raise DataError(
            f"ImageNet not found in {root_path}: it needs train/<wnid>/*.JPEG and val/<wnid>/*.JPEG "
            "(ILSVRC-2012, which must be obtained from image-net.org); set data.root."
        )
    if not _class_dirs(val_dir):
        # The official validation archive is flat; it has to be sorted into wnid folders first.
        raise DataError(
            f"ImageNet {val_dir} is flat; sort its images into val/<wnid>/ folders "
            "(e.g. with the widely used valprep.sh) and try again."
        )
    # Readable names if the Kaggle LOC_synset_mapping.txt or a words.txt sits next to the folders.
    words = _read_wnid_names(root_path / "LOC_synset_mapping.txt") or _read_wnid_names(root_path / "words.txt")
    return _streaming_from_folders(
        root_path, "imagenet", "ImageNet", 224, None, 0,
        class_names=lambda wnids: [words.get(w, w) for w in wnids],
    )


# ---------------------------------------------------------------------------------------------
# STL-10 (binary version)
# ---------------------------------------------------------------------------------------------

_STL_FILES = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]


def _stl_folder(root: Path) -> Path | None:
    for folder in (root / "stl10_binary", root):
        if all((folder / f).is_file() for f in _STL_FILES):
            return folder
    return None


def _read_stl_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    pixels = np.fromfile(x_path, dtype=np.uint8)
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
    per_image = 3 * 96 * 96
    if pixels.size % per_image or pixels.size // per_image != labels.size:
        raise DataError(
            f"{x_path} ({pixels.size} bytes) and {y_path} ({labels.size} labels) do not match "
            "96x96 colour images one label each; replace them with intact copies"
        )
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{y_path} has labels outside 1..10; replace it with an intact copy")
    # Each image is stored channel by channel in column-major order (written from MATLAB),
    # so swap the last two axes to get the usual C x H x W.
    images = pixels.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    return images, labels - 1  # labels 1..10 -> 0..9


def load_stl10(root: str, image_size: int, download: bool) -> InMemoryData:
    """STL-10's labelled train (5000) and test (8000) images, resized to ``image_size``."""
    root_path = Path(root).expanduser()
    folder = _stl_folder(root_path)
    expected = "stl10_binary/ with train_X.bin, train_y.bin, test_X.bin, test_y.bin"

    if folder is None and download:
        import torchvision.datasets as tvd

        failure = _try_download(lambda: tvd.STL10(root=str(root_path), split="train", download=True))
        folder = _stl_folder(root_path)
        if folder is None:
            raise DataError(
                f"STL-10 not found in {root_path} and it could not be downloaded ({failure or 'no files'}). "
                f"Put the binary version ({expected}) there, or set data.root."
            )
    if folder is None:
        raise DataError(
            f"STL-10 not found in {root_path} (downloading is off). "
            f"Put the binary version ({expected}) there, set data.root, or allow downloading."
        )

    train_x, train_y = _to_tensors(*_read_stl_split(folder, "train"))
    val_x, val_y = _to_tensors(*_read_stl_split(folder, "test"))
    names_path = folder / "class_names.txt"
    names = [n.strip() for n in names_path.read_text().splitlines() if n.strip()] if names_path.is_file() else None
    return InMemoryData(
        name="stl10",
        train_x=_resize_uint8(train_x, image_size),
        train_y=train_y,
        val_x=_resize_uint8(val_x, image_size),
        val_y=val_y,
        num_classes=10,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augment="crop_flip",
        class_names=names,
    )


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet (tiny-imagenet-200)
# ---------------------------------------------------------------------------------------------


def _tiny_folder(root: Path) -> Path | None:
    for folder in (root / "tiny-imagenet-200", root):
        if (folder / "wnids.txt").is_file() and (folder / "train").is_dir() and (folder / "val").is_dir():
            return folder
    return None


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _tiny_train_files(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    items = []
    for label, wnid in enumerate(wnids):
        # The archive keeps images in train/<wnid>/images/; accept them directly under <wnid>/ too.
        class_dir = folder / "train" / wnid
        files = _images_in(class_dir / "images") or _images_in(class_dir)
        if not files:
            raise DataError(f"Tiny-ImageNet: no images in {class_dir}/images; the train folder is incomplete")
        items += [(p, label) for p in files]
    return items


def _tiny_val_files(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    index = {w: i for i, w in enumerate(wnids)}
    val_dir = folder / "val"
    annotations = val_dir / "val_annotations.txt"
    items = []
    if annotations.is_file():
        # "val_0.JPEG<TAB>n03444034<TAB>x0<TAB>y0<TAB>x1<TAB>y1" per line.
        for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
            parts = line.split("\t")
            if not line.strip():
                continue
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(f"{annotations} line {line_no} names no known wnid; replace it with an intact copy")
            path = val_dir / "images" / parts[0]
            if not path.is_file():
                raise DataError(f"Tiny-ImageNet: {path} is listed in {annotations.name} but missing")
            items.append((path, index[parts[1]]))
    else:
        # A val folder already sorted into val/<wnid>/[images/] is accepted as well.
        for wnid, label in index.items():
            files = _images_in(val_dir / wnid / "images") or _images_in(val_dir / wnid)
            items += [(p, label) for p in files]
    if not items:
        raise DataError(f"Tiny-ImageNet: no validation images; {val_dir} needs images/ and val_annotations.txt")
    return items


def _load_images(paths: list[Path], image_size: int, fit: Callable | None = None) -> np.ndarray:
    """Decode and resize images to N x 3 x S x S uint8, in threads (PIL releases the GIL).

    ``fit`` (a PIL image to an S x S PIL image) replaces the plain resize to S x S.
    """
    from PIL import Image

    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)

    def load(i: int) -> None:
        try:
            with Image.open(paths[i]) as img:
                img = img.convert("RGB")  # a few Tiny-ImageNet images are greyscale
                if fit is not None:
                    img = fit(img)
                elif img.size != (image_size, image_size):
                    # PIL's bilinear resize widens its filter when shrinking, i.e. it antialiases.
                    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(img)
        except OSError as exc:
            raise DataError(f"{paths[i]} cannot be decoded ({_reason(exc)}); replace it") from None

    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 4)) as pool:
        list(pool.map(load, range(len(paths)), chunksize=256))
    return out.transpose(0, 3, 1, 2)  # N x C x H x W


def load_tiny_imagenet(root: str, image_size: int) -> InMemoryData:
    """Tiny-ImageNet's 200 classes (100k train, 10k val images), resized to ``image_size``."""
    root_path = Path(root).expanduser()
    folder = _tiny_folder(root_path)
    if folder is None:
        raise DataError(
            f"Tiny-ImageNet not found in {root_path}. Unpack tiny-imagenet-200.zip there "
            "(tiny-imagenet-200/ with wnids.txt, train/, val/), or set data.root."
        )
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().splitlines() if w.strip()]
    if not wnids:
        raise DataError(f"{folder / 'wnids.txt'} is empty; replace it with an intact copy")

    train_items = _tiny_train_files(folder, wnids)
    val_items = _tiny_val_files(folder, wnids)
    train_x, train_y = _to_tensors(
        _load_images([p for p, _ in train_items], image_size), np.array([y for _, y in train_items])
    )
    val_x, val_y = _to_tensors(
        _load_images([p for p, _ in val_items], image_size), np.array([y for _, y in val_items])
    )
    words = _read_wnid_names(folder / "words.txt")
    return InMemoryData(
        name="tiny_imagenet",
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        num_classes=len(wnids),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augment="crop_flip",
        class_names=[words.get(w, w) for w in wnids],
    )


# ---------------------------------------------------------------------------------------------
# Small image folders: decoded once, cached, and trained in memory like CIFAR
# ---------------------------------------------------------------------------------------------

# Small images' decoded pixels (uint8) up to this size are held in memory (and on the device).
FOLDER_CACHE_MAX_BYTES = 2 << 30
# Part of every cache key: a change to how images are decoded makes older caches stale.
FOLDER_CACHE_VERSION = 1


def small_folder_in_memory(data: StreamingData, root: str, image_size: int) -> InMemoryData | StreamingData:
    """A folder of small images as InMemoryData, read from its cache or decoded (and cached) once.

    Small means smaller than SMALL_IMAGE_SIZE, the sizes folder_transforms trains with the CIFAR
    recipe (resize, centre crop, then a random crop with image_size // 8 of padding and a flip: what
    BatchAugment does on the device), and all of the folder's images within FOLDER_CACHE_MAX_BYTES.
    Anything larger (ImageNet) keeps streaming from disk.
    """
    train, val = _samples(data.train_set), _samples(data.val_set)
    files = sorted({path for path, _ in train + val})
    if image_size >= SMALL_IMAGE_SIZE or len(files) * 3 * image_size**2 > FOLDER_CACHE_MAX_BYTES:
        return data
    images = _cached_images(Path(root).expanduser().absolute(), files, image_size)
    row = {path: i for i, path in enumerate(files)}

    def split(samples: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.tensor([row[path] for path, _ in samples], dtype=torch.long)
        return images[index], torch.tensor([label for _, label in samples], dtype=torch.long)

    train_x, train_y = split(train)
    val_x, val_y = split(val)
    return InMemoryData(
        name=data.name,
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        num_classes=data.num_classes,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augment="crop_flip",
        class_names=data.class_names,
        crop_padding=image_size // 8,  # as the streamed folder's RandomCrop
    )


def _cache_places(root: Path, image_size: int, key: str) -> list[Path]:
    """Where a folder's cache may be: a file beside the data (a file: ImageFolder would take a
    folder for a class), else in the user's cache folder when the data's folder is read-only."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rrdtui"
    folder_tag = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return [root / f".rrdtui-cache-{image_size}px-{key}.pt", user / f"folder-{folder_tag}-{image_size}px-{key}.pt"]


def _cached_images(root: Path, files: list[str], image_size: int) -> torch.Tensor:
    """The decoded images of ``files`` (N x 3 x S x S uint8), from the cache when it is current.

    The key covers every file's name, size and modification time and the image size: a folder
    that changed in any of them is decoded again.
    """
    names = [os.path.relpath(f, root) for f in files]
    digest = hashlib.sha256(f"rrdtui folder cache v{FOLDER_CACHE_VERSION} {image_size}px".encode())
    for name, f in zip(names, files):
        st = os.stat(f)
        digest.update(f"\n{name}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    places = _cache_places(root, image_size, digest.hexdigest()[:20])
    for path in places:
        try:
            cached = torch.load(path, weights_only=True)
            if cached["files"] == names:
                return cached["images"]
        except FileNotFoundError:
            pass
        except Exception as exc:  # cut short or not ours: decoded again and rewritten below
            log.warning("folder cache %s is unreadable (%s); decoding the images again", path, _reason(exc))
    from torchvision import transforms as T

    # The geometry of the streamed validation images, so cached and streamed pixels agree.
    fit = T.Compose(_small_geometry(image_size))
    images = torch.from_numpy(np.ascontiguousarray(_load_images([Path(f) for f in files], image_size, fit)))
    _write_cache({"files": names, "images": images}, places)
    return images


def _write_cache(cache: dict, places: list[Path]) -> None:
    """Write the cache to the first place that takes it, removing that place's stale caches."""
    for path in places:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Its own temporary file: trainers started together on one folder each write a whole cache.
            checkpoint.save_atomic(cache, path, tmp_suffix=f".{os.getpid()}.tmp")
        except (OSError, checkpoint.CheckpointError) as exc:
            log.info("cannot write the folder cache %s (%s)", path, _reason(exc))
            continue
        prefix = path.name[: path.name.rindex("-") + 1]  # the same folder and image size, older contents
        for stale in path.parent.glob(f"{prefix}*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)
        log.info("folder images cached in %s", path)
        return
    log.warning("the folder's images could not be cached (%s); they are decoded again next time", places[-1].parent)
