"""Data preflight for the CLI and the launcher: are a run's data set files there, or can they come?

Run before any run row is written, so a missing data set is one line in the terminal instead of a
run that fails in its trainer process minutes later. No torch, and nothing from rrdtui.train: this
module mirrors the folders `rrdtui.train.data.load_data` reads and the files each loader of
`rrdtui.train.datasets` expects (keep the three in step). It only looks for file names; whether the
files are intact is the loader's business.

When a downloadable data set (CIFAR-10/100, STL-10) is missing and data.download is on, the download
host is tried with a 3-second connection (through the proxy when one is configured): an unreachable
host is reported now, rather than after torchvision's download times out in the trainer.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from rrdtui.config import ConfigError

# Where Debian's dataset-fashion-mnist package installs the idx files (as rrdtui.train.datasets).
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

REACH_TIMEOUT_S = 3.0

CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
STL10_PAGE = "https://cs.stanford.edu/~acoates/stl10/"

# name: (title, folder inside the root, files, download host and port, where it comes from)
_DOWNLOADABLE = {
    "cifar100": (
        "CIFAR-100", "cifar-100-python", ["train", "test"], ("www.cs.toronto.edu", 443), CIFAR_PAGE,
    ),
    "cifar10": (
        "CIFAR-10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
        ("www.cs.toronto.edu", 443), CIFAR_PAGE,
    ),
    "stl10": (
        "STL-10", "stl10_binary", ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"],
        ("ai.stanford.edu", 80), STL10_PAGE,
    ),
}  # fmt: skip

_IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def default_data_root() -> str:
    """As rrdtui.train.data.default_data_root: $RRDTUI_DATA, else ./data."""
    return os.environ.get("RRDTUI_DATA") or "data"


def data_root(data) -> str:
    """The folder a data set is read from: data.root, else $RRDTUI_DATA/<name> (default ./data/<name>)."""
    return data.root or f"{default_data_root()}/{data.name}"


def reachable(host: str, port: int, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to host:port (or to the configured proxy for it) opens in `timeout`.

    The name lookup cannot be given a timeout, so the attempt runs in a daemon thread that is
    abandoned when the time is up.
    """
    scheme = "https" if port == 443 else "http"
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.hostname:
            host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, name="rrdtui-reach", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _all_files(folder: Path, names: list[str]) -> bool:
    return all((folder / n).is_file() for n in names)


def _check_downloadable(name: str, data) -> None:
    title, folder, files, (host, port), page = _DOWNLOADABLE[name]
    root = data_root(data)
    base = Path(root).expanduser()
    if any(_all_files(f, files) for f in (base / folder, base)):
        return
    what = f"{folder}/" if name != "stl10" else f"{folder}/ ({', '.join(files)})"
    if not data.download:
        raise ConfigError(
            f"{title} not found in {root} and data.download is false: put {what} (from {page}) there, "
            "set data.root, or set data.download to true"
        )
    if not reachable(host, port):
        raise ConfigError(
            f"{title} not found in {root} and the network is unreachable: put {what} (from {page}) there, "
            "or set data.root"
        )


def _idx_found(folder: Path) -> bool:
    for base in _IDX_FILES:
        dotted = base.replace("-idx", ".idx")
        if not any((folder / n).is_file() for n in (base, base + ".gz", dotted, dotted + ".gz")):
            return False
    return True


def _check_fashion_mnist(data) -> None:
    # The loader reads data.root only (no $RRDTUI_DATA folder), then Debian's copy.
    folders: list[Path] = []
    if data.root:
        base = Path(data.root).expanduser()
        folders += [base, base / "FashionMNIST" / "raw", base / "raw"]
    folders.append(Path(DEBIAN_FASHION_MNIST))
    if any(_idx_found(f) for f in folders):
        return
    raise ConfigError(
        f"Fashion-MNIST not found (searched {', '.join(str(f) for f in folders)}): install it with "
        "'apt-get install dataset-fashion-mnist', or put the four idx files (train-images-idx3-ubyte[.gz], ...; "
        "from https://github.com/zalandoresearch/fashion-mnist) in a folder and set data.root to it"
    )


def _check_tiny_imagenet(data) -> None:
    root = data_root(data)
    base = Path(root).expanduser()
    for folder in (base / "tiny-imagenet-200", base):
        if (folder / "wnids.txt").is_file() and (folder / "train").is_dir() and (folder / "val").is_dir():
            return
    raise ConfigError(
        f"Tiny-ImageNet not found in {root}: unpack tiny-imagenet-200.zip "
        "(from http://cs231n.stanford.edu/tiny-imagenet-200.zip) there, so it holds tiny-imagenet-200/ "
        "with wnids.txt, train/ and val/, or set data.root"
    )


def _check_imagenet(data) -> None:
    root = data_root(data)
    base = Path(root).expanduser()
    if (base / "train").is_dir() and (base / "val").is_dir():
        return
    raise ConfigError(
        f"ImageNet not found in {root}: it needs train/<wnid>/*.JPEG and val/<wnid>/*.JPEG "
        "(ILSVRC-2012, from https://image-net.org after registering); put them there or set data.root"
    )


def _check_image_folder(data) -> None:
    if not data.root:
        raise ConfigError("data.name imagefolder needs data.root: a folder of class sub-folders")
    base = Path(data.root).expanduser()
    if not base.is_dir():
        raise ConfigError(
            f"Image folder {data.root} not found: point data.root at a folder of class sub-folders "
            "(optionally split into train/ and val/)"
        )
    if not any(p.is_dir() for p in base.iterdir()):
        raise ConfigError(f"Image folder {data.root} has no class sub-folders: lay it out as {data.root}/<class>/<image>")


def check_data(cfg) -> None:
    """Raise ConfigError (one line) when cfg's data set is missing and cannot be fetched.

    `cfg` is a Config (or its DataConfig). Synthetic data is generated, so always passes.
    """
    data = getattr(cfg, "data", cfg)
    name = data.name
    if name == "synthetic":
        return
    if name in _DOWNLOADABLE:
        _check_downloadable(name, data)
    elif name == "fashion_mnist":
        _check_fashion_mnist(data)
    elif name == "tiny_imagenet":
        _check_tiny_imagenet(data)
    elif name == "imagenet":
        _check_imagenet(data)
    elif name == "imagefolder":
        _check_image_folder(data)


# The class count and image channels of each data set whose count is fixed (as its loader in
# rrdtui.train.datasets gives them); folder data sets count their class folders when they load.
_SHAPES = {"cifar100": (100, 3), "cifar10": (10, 3), "fashion_mnist": (10, 1), "stl10": (10, 3)}


def data_shape(cfg) -> tuple[int | None, int]:
    """(number of classes, input channels) of cfg's data set, without loading it; classes None when
    only loading can tell (imagefolder, imagenet, tiny_imagenet). `cfg` is a Config or its DataConfig."""
    data = getattr(cfg, "data", cfg)
    if data.name == "synthetic":
        return data.num_classes, 3
    return _SHAPES.get(data.name, (None, 3))
