"""Data containers, the embedded synthetic data set, and batch augmentation on tensors.

In-memory data sets are held as uint8 tensors so a whole training set can live on the device and be
augmented there per batch (random crop with zero padding, horizontal flip, normalisation), which is
what keeps small CIFAR models from being bound by a Python data loader.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DataError(Exception):
    """A user-facing data problem: one line saying what is missing and how to provide it."""


@dataclass
class InMemoryData:
    """A whole data set as uint8 tensors (N x C x H x W) with its normalisation and augmentation."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str  # "crop_flip" | "flip" | "none"
    class_names: list[str] | None = None

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


@dataclass
class StreamingData:
    """Folder data sets too large for memory: torch Datasets that augment and normalise per item."""

    name: str
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    num_classes: int
    class_names: list[str] | None = None


# ---------------------------------------------------------------------------------------------
# Synthetic data: a deterministic, learnable but not trivial 3x32x32 classification problem.
# ---------------------------------------------------------------------------------------------

SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.25, 0.25, 0.25)


def make_synthetic(
    num_classes: int = 10,
    train_size: int = 5000,
    val_size: int = 1000,
    seed: int = 0,
    image_size: int = 32,
) -> InMemoryData:
    """A deterministic 3 x size x size problem where capacity matters and classes are related.

    There is a small vocabulary of textures (an oriented colour grating each). A class is an
    *ordered* pair of textures: texture A in the upper half of the image above texture B in the lower
    half. Classes (A, B) and (B, A), and classes sharing a texture, are similar: the structure a
    teacher's soft labels and relations carry and distillation transfers. Telling (A, B) from (B, A)
    needs a receptive field spanning both halves, which a deeper network has and a shallow one lacks.
    Each image also holds weaker distractor textures anywhere and pixel noise. Horizontal flips keep
    the label (the arrangement is vertical). The same seed always gives the same tensors.
    """
    if num_classes < 2:
        raise DataError("data.num_classes must be at least 2 for the synthetic data set")
    gen = torch.Generator().manual_seed(seed)
    size = image_size
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    # The smallest vocabulary with enough ordered pairs for the classes; both orders of a pair are
    # taken first, so most classes have a mirror-image twin.
    vocab = 2
    while vocab * (vocab - 1) < num_classes:
        vocab += 1
    unordered = torch.combinations(torch.arange(vocab), 2)
    unordered = unordered[torch.randperm(unordered.shape[0], generator=gen)]
    pairs = torch.cat([unordered, unordered.flip(1)], dim=1).view(-1, 2)[:num_classes]
    freqs = 0.08 + 0.3 * torch.rand(vocab, generator=gen)
    angles = torch.rand(vocab, generator=gen) * torch.pi
    colours = torch.nn.functional.normalize(torch.rand(vocab, 3, generator=gen) * 2 - 1, dim=1)

    def texture(which: torch.Tensor, amplitude: torch.Tensor, rows: tuple[float, float]) -> torch.Tensor:
        """One vocabulary texture per image (N,), in a soft window centred within `rows` (fractions
        of the height): N x 3 x H x W."""
        n = which.shape[0]
        phase = torch.rand(n, generator=gen) * 2 * torch.pi
        angle = angles[which] + 0.15 * torch.randn(n, generator=gen)
        u = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
        wave = torch.sin(2 * torch.pi * freqs[which][:, None, None] * u + phase[:, None, None])
        cx = torch.rand(n, generator=gen) * size
        cy = (rows[0] + (rows[1] - rows[0]) * torch.rand(n, generator=gen)) * size
        radius = size * (0.15 + 0.1 * torch.rand(n, generator=gen))
        dist2 = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2
        window = torch.exp(-dist2 / (2 * radius[:, None, None] ** 2))
        return (amplitude[:, None, None] * wave * window)[:, None] * colours[which][:, :, None, None]

    def sample(count: int):
        labels = torch.randint(num_classes, (count,), generator=gen)
        images = torch.zeros(count, 3, size, size)
        for slot, rows in enumerate(((0.1, 0.4), (0.6, 0.9))):  # A above, B below
            amplitude = 0.7 + 0.6 * torch.rand(count, generator=gen)
            images += texture(pairs[labels, slot], amplitude, rows)
        for _ in range(2):
            # A distractor: any texture of the vocabulary, present in most images, weaker on average.
            which = torch.randint(vocab, (count,), generator=gen)
            present = (torch.rand(count, generator=gen) < 0.8).float()
            amplitude = present * (0.3 + 0.6 * torch.rand(count, generator=gen))
            images += texture(which, amplitude, (0.0, 1.0))
        images += 0.6 * torch.randn(count, 3, size, size, generator=gen)
        # Map to uint8 the way a photograph is stored.
        pixels = ((images / 4.0 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        return pixels, labels

    train_x, train_y = sample(train_size)
    val_x, val_y = sample(val_size)
    names = [f"tex{int(a)}-over-tex{int(b)}" for a, b in pairs]
    return InMemoryData(
        name="synthetic",
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        num_classes=num_classes,
        mean=SYNTHETIC_MEAN,
        std=SYNTHETIC_STD,
        augment="crop_flip",
        class_names=names,
    )


# ---------------------------------------------------------------------------------------------
# Batch augmentation on tensors (CPU or GPU), equivalent in distribution to torchvision's
# RandomCrop(size, padding=4) + RandomHorizontalFlip() + Normalize on uint8 images.
# ---------------------------------------------------------------------------------------------


class BatchAugment:
    """Turns uint8 batches into normalised float batches, augmenting the training ones.

    Holds the mean/std and index grids on the device so that each call is a handful of kernels with
    no host synchronisation.
    """

    def __init__(self, data: InMemoryData, device: torch.device, padding: int = 4):
        self.mode = data.augment
        self.padding = padding
        self.size = data.image_size
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1) * 255.0
        self.arange = torch.arange(self.size, device=device)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def train(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a uint8 batch (B x C x H x W) and normalise it."""
        if self.mode == "crop_flip":
            x = self.random_crop(x, generator)
        if self.mode in ("crop_flip", "flip"):
            x = self.random_flip(x, generator)
        return self.normalise(x)

    def random_crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # Zero padding, as torchvision's RandomCrop(padding=4) with fill=0, then one random
        # offset per sample in [0, 2*padding], gathered with advanced indexing in one kernel.
        b, c, h, w = x.shape
        p = self.padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        off = torch.randint(0, 2 * p + 1, (2, b), device=x.device, generator=generator)
        rows = (off[0][:, None] + self.arange[:h])[:, None, :, None]  # B,1,H,1
        cols = (off[1][:, None] + self.arange[:w])[:, None, None, :]  # B,1,1,W
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chans, rows, cols]

    def random_flip(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ---------------------------------------------------------------------------------------------
# Dispatch by data.name
# ---------------------------------------------------------------------------------------------


def default_data_root() -> str:
    import os

    return os.environ.get("RRDTUI_DATA") or "data"


def load_data(cfg) -> InMemoryData | StreamingData:
    """The data set a DataConfig names, cut to data.train_limit training images when it is set."""
    data = _load(cfg)
    if cfg.train_limit is not None and isinstance(data, InMemoryData) and cfg.train_limit < data.train_x.shape[0]:
        # The same images for every run of the same data_seed, whatever the run's own seed.
        gen = torch.Generator().manual_seed(cfg.data_seed)
        keep = torch.randperm(data.train_x.shape[0], generator=gen)[: cfg.train_limit].sort().values
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    return data


def _load(cfg) -> InMemoryData | StreamingData:
    """Real data sets come from rrdtui.train.datasets.

    Without data.root, each data set lives in its own folder under $RRDTUI_DATA (default ./data).
    """
    if cfg.name == "synthetic":
        return make_synthetic(cfg.num_classes, cfg.train_size, cfg.val_size, cfg.data_seed, cfg.image_size)
    from rrdtui.train import datasets

    root = cfg.root or f"{default_data_root()}/{cfg.name}"
    if cfg.name in ("cifar100", "cifar10"):
        return datasets.load_cifar(root, 100 if cfg.name == "cifar100" else 10, cfg.download)
    if cfg.name == "fashion_mnist":
        return datasets.load_fashion_mnist(cfg.root)
    if cfg.name == "imagefolder":
        if not cfg.root:
            raise DataError("data.name imagefolder needs data.root: a folder of class sub-folders")
        return datasets.load_image_folder(cfg.root, cfg.image_size, cfg.val_split, cfg.data_seed)
    if cfg.name == "imagenet":
        return datasets.load_imagenet(root)
    if cfg.name == "stl10":
        return datasets.load_stl10(root, cfg.image_size, cfg.download)
    if cfg.name == "tiny_imagenet":
        return datasets.load_tiny_imagenet(root, cfg.image_size)
    raise DataError(f"unknown data set '{cfg.name}'")
