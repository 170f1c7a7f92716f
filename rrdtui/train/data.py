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
    crop_padding: int = 4  # the random crop's zero padding (CIFAR's 4 pixels)
    # Training images held out for model selection (data.holdout), None without a holdout.
    holdout_x: torch.Tensor | None = None
    holdout_y: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def train_labels(self) -> torch.Tensor:
        return self.train_y

    def keep_train(self, keep: torch.Tensor) -> None:
        self.train_x, self.train_y = self.train_x[keep], self.train_y[keep]

    def hold_out(self, pick: torch.Tensor) -> None:
        self.holdout_x, self.holdout_y = self.train_x[pick], self.train_y[pick]


@dataclass
class StreamingData:
    """Folder data sets too large for memory: torch Datasets that augment and normalise per item."""

    name: str
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    num_classes: int
    class_names: list[str] | None = None
    holdout_set: torch.utils.data.Dataset | None = None  # data.holdout's images, without train augmentation

    def train_labels(self) -> torch.Tensor:
        return torch.as_tensor(self.train_set.targets)

    def keep_train(self, keep: torch.Tensor) -> None:
        from rrdtui.train.datasets import folder_subset

        self.train_set = folder_subset(self.train_set, keep.tolist())

    def hold_out(self, pick: torch.Tensor) -> None:
        from rrdtui.train.datasets import folder_subset

        # Held-out images are evaluated like validation images: the val transform, no augmentation.
        self.holdout_set = folder_subset(self.train_set, pick.tolist(), self.val_set.transform)


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

    def __init__(self, data: InMemoryData, device: torch.device):
        self.mode = data.augment
        self.padding = data.crop_padding
        self.size = data.image_size
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1) * 255.0
        self.arange = torch.arange(self.size, device=device)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def train(
        self, x: torch.Tensor, generator: torch.Generator | None = None, rows: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Augment a uint8 batch (B x C x H x W) and normalise it.

        `rows` (start, n): x is rows start.. of a global batch of n, one process's share of it. The
        random draws are made for all n rows, as one process holding the whole batch makes them, and
        this share's rows are used: every rank's generator stays in step, and each image is
        augmented as it would be by one process.
        """
        start, n = rows or (0, x.shape[0])
        if self.mode == "crop_flip":
            x = self.random_crop(x, generator, start, n)
        if self.mode in ("crop_flip", "flip"):
            x = self.random_flip(x, generator, start, n)
        return self.normalise(x)

    def random_crop(
        self, x: torch.Tensor, generator: torch.Generator | None, start: int = 0, n: int | None = None
    ) -> torch.Tensor:
        # Zero padding, as torchvision's RandomCrop(padding=4) with fill=0, then one random
        # offset per sample in [0, 2*padding], gathered with advanced indexing in one kernel.
        b, c, h, w = x.shape
        p = self.padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        off = torch.randint(0, 2 * p + 1, (2, n or b), device=x.device, generator=generator)[:, start : start + b]
        rows = (off[0][:, None] + self.arange[:h])[:, None, :, None]  # B,1,H,1
        cols = (off[1][:, None] + self.arange[:w])[:, None, None, :]  # B,1,1,W
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chans, rows, cols]

    def random_flip(
        self, x: torch.Tensor, generator: torch.Generator | None, start: int = 0, n: int | None = None
    ) -> torch.Tensor:
        b = x.shape[0]
        flip = torch.rand(n or b, device=x.device, generator=generator)[start : start + b] < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ---------------------------------------------------------------------------------------------
# Dispatch by data.name
# ---------------------------------------------------------------------------------------------


def default_data_root() -> str:
    import os

    return os.environ.get("RRDTUI_DATA") or "data"


def stratified_indices(labels: torch.Tensor, n: int, seed: int, leave: int = 0) -> torch.Tensor:
    """n indices into labels (sorted), each class in proportion to its share, a fixed choice per seed.

    Per class: its ideal share n * count / total, rounded down, at least one image when n reaches the
    number of classes, then images handed out (or taken back) one at a time to the class furthest
    from its share (largest remainders), so every count is within one image of its share when the
    minimum of one does not distort it. `leave` images of each class are never picked.
    """
    labels = labels.cpu()
    gen = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels)
    cap = (counts - leave).clamp(min=0)
    if n > int(cap.sum()):
        raise ValueError(f"cannot pick {n} of {int(cap.sum())} items")
    ideal = counts.double() * n / len(labels)
    quota = torch.minimum(ideal.floor().long(), cap)
    present = cap > 0
    if n >= int(present.sum()):
        quota = torch.where(present, quota.clamp(min=1), quota)
    # Ties go to classes in a random order (not always the first classes) when n < number of classes.
    order = torch.randperm(len(counts), generator=gen)
    while (short := n - int(quota.sum())) != 0:
        step = 1 if short > 0 else -1
        room = quota < cap if step > 0 else quota > 1
        gap = torch.where(room, (ideal - quota) * step, -torch.inf)[order]
        quota[order[int(gap.argmax())]] += step
    # The first quota[c] images of each class in a random order of the whole set.
    shuffled = torch.randperm(len(labels), generator=gen)
    by_class = shuffled[torch.sort(labels[shuffled], stable=True).indices]
    starts = (counts.cumsum(0) - counts).tolist()
    picked = [by_class[s : s + q] for s, q in zip(starts, quota.tolist())]
    return torch.cat(picked).sort().values


def load_data(cfg) -> InMemoryData | StreamingData:
    """The data set a DataConfig names, with data.holdout images held out and cut to data.train_limit.

    Both choices follow data.data_seed, not the run's seed: every run of the same data trains and
    selects on the same images. The holdout is carved from the full training set first and
    train_limit then cuts what is left, so a quick study on fewer images is still judged on the same
    held-out images as the full run.
    """
    data = _load(cfg)
    if cfg.holdout:
        labels = data.train_labels()
        classes = int((torch.bincount(labels) > 0).sum())
        if cfg.holdout > len(labels) - classes:
            raise DataError(
                f"data.holdout ({cfg.holdout}) leaves a class without training images: the training set has "
                f"{len(labels)} images in {classes} classes; set data.holdout to at most {len(labels) - classes}"
            )
        held = stratified_indices(labels, cfg.holdout, cfg.data_seed, leave=1)
        rest = torch.ones(len(labels), dtype=torch.bool)
        rest[held] = False
        data.hold_out(held)
        data.keep_train(torch.nonzero(rest).flatten())
    n_train = len(data.train_labels())
    if cfg.train_limit is not None and cfg.train_limit < n_train:
        # The same images for every run of the same data_seed, whatever the run's own seed.
        gen = torch.Generator().manual_seed(cfg.data_seed)
        data.keep_train(torch.randperm(n_train, generator=gen)[: cfg.train_limit].sort().values)
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
        data = datasets.load_image_folder(cfg.root, cfg.image_size, cfg.val_split, cfg.data_seed)
        return datasets.small_folder_in_memory(data, cfg.root, cfg.image_size)
    if cfg.name == "imagenet":
        return datasets.load_imagenet(root)
    if cfg.name == "stl10":
        return datasets.load_stl10(root, cfg.image_size, cfg.download)
    if cfg.name == "tiny_imagenet":
        return datasets.load_tiny_imagenet(root, cfg.image_size)
    raise DataError(f"unknown data set '{cfg.name}'")
