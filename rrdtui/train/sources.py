"""Where training batches come from: an in-memory data set on the device, or a streaming one.

Both hand the loop the same things: shuffled (x, y, index) batches from any position of an epoch's
permutation (so a run resumes mid-epoch exactly), batches of the data set's validation (or test)
split and of the training images held out for model selection (data.holdout), a fixed probe set
that covers the classes, and the labels of every training sample (CRD draws its negatives from other
classes).

With several processes (rrdtui.train.distributed) every rank draws the same permutation from the
same generator and takes its own rows of each global batch: rank r the r-th of `world` equal parts,
so the parts, gathered in rank order, are the batch one process would train on. Folder data sets
load those rows with a DataLoader per rank (a distributed sampler that keeps the global batches).
Evaluation splits the validation images among the ranks; the loop adds up their counts.
"""

from __future__ import annotations

from typing import Iterator

import torch

from rrdtui.train.data import BatchAugment, InMemoryData, StreamingData, stratified_indices


def batches_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    # BatchNorm cannot train on a batch of one: a last batch of a single sample is dropped. With
    # several processes the last batch is cut to a multiple of their number (each takes as many).
    full, rest = divmod(n, batch_size)
    rest -= rest % world
    return full + (1 if rest > 1 else 0)


def my_rows(batch: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, int, int]:
    """This rank's rows of a global batch, where they start, and the batch's size (a last batch cut
    to a multiple of world first, as batches_per_epoch counts it)."""
    n = batch.shape[0] - batch.shape[0] % world
    size = n // world
    return batch[rank * size : (rank + 1) * size], rank * size, n


def my_part(n: int, rank: int, world: int) -> range:
    """This rank's part of n evaluation items: contiguous, the first n % world ranks one more."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (1 if rank < extra else 0))


class MemorySource:
    """The whole data set on the device as uint8, augmented there per batch (no loader, no workers)."""

    def __init__(
        self,
        data: InMemoryData,
        device: torch.device,
        batch_size: int,
        eval_batch_size: int,
        rank: int = 0,
        world: int = 1,
    ):
        for name in ("train_x", "train_y", "val_x", "val_y", "holdout_x", "holdout_y"):
            if getattr(data, name) is not None:
                setattr(data, name, getattr(data, name).to(device, non_blocking=True))
        self.data = data
        self.device = device
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.augment = BatchAugment(data, device)
        self.num_classes = data.num_classes
        self.channels = data.channels
        self.image_size = data.image_size
        self.n_train = data.train_x.shape[0]
        self.n_val = data.val_x.shape[0]
        self.n_holdout = data.holdout_y.shape[0] if data.holdout_y is not None else 0
        self.train_labels = data.train_y
        self.rank, self.world = rank, world
        self.per_epoch = batches_per_epoch(self.n_train, batch_size, world)

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.n_train, device=self.device, generator=generator)

    def epoch(self, perm: torch.Tensor, start: int, generator: torch.Generator) -> Iterator[tuple]:
        for i in range(start, self.per_epoch):
            index, first, n = my_rows(perm[i * self.batch_size : (i + 1) * self.batch_size], self.rank, self.world)
            yield self.augment.train(self.data.train_x[index], generator, (first, n)), self.data.train_y[index], index

    def val(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self.data.val_x, self.data.val_y)

    def holdout(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self.data.holdout_x, self.data.holdout_y)

    def _batches(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        part = my_part(y.shape[0], self.rank, self.world)
        x, y = x[part.start : part.stop], y[part.start : part.stop]
        for start in range(0, y.shape[0], self.eval_batch_size):
            stop = start + self.eval_batch_size
            yield self.augment.normalise(x[start:stop]), y[start:stop]

    def probe(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation images drawn across the classes (a class-sorted set's first images are a few classes)."""
        index = stratified_indices(self.data.val_y, min(size, self.n_val), seed).to(self.device)
        return self.augment.normalise(self.data.val_x[index]), self.data.val_y[index]


class _Indexed(torch.utils.data.Dataset):
    """A data set whose items also carry their index (CRD's memory is addressed by sample)."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, i


class StreamSource:
    """Folder data sets: a DataLoader with workers decodes and augments on the CPU."""

    def __init__(
        self,
        data: StreamingData,
        device: torch.device,
        batch_size: int,
        eval_batch_size: int,
        workers: int,
        rank: int = 0,
        world: int = 1,
    ):
        self.data = data
        self.device = device
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.workers = workers
        self.num_classes = data.num_classes
        self.n_train = len(data.train_set)
        self.n_val = len(data.val_set)
        self.n_holdout = len(data.holdout_set) if data.holdout_set is not None else 0
        first, _ = data.val_set[0]
        self.channels = int(first.shape[0])
        self.image_size = int(first.shape[-1])
        self.train_labels = torch.as_tensor(data.train_set.targets, device=device)
        self.rank, self.world = rank, world
        self.per_epoch = batches_per_epoch(self.n_train, batch_size, world)
        self._pin = device.type == "cuda"

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.n_train, device=self.device, generator=generator)

    def epoch(self, perm: torch.Tensor, start: int, generator: torch.Generator) -> Iterator[tuple]:
        order = perm.cpu()
        index_batches = [
            my_rows(order[i * self.batch_size : (i + 1) * self.batch_size], self.rank, self.world)[0].tolist()
            for i in range(start, self.per_epoch)
        ]
        loader = torch.utils.data.DataLoader(
            _Indexed(self.data.train_set),
            batch_sampler=index_batches,
            num_workers=self.workers,
            pin_memory=self._pin,
            persistent_workers=False,
        )
        for x, y, index in loader:
            yield (
                x.to(self.device, non_blocking=True),
                y.to(self.device, non_blocking=True),
                index.to(self.device, non_blocking=True),
            )

    def val(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self.data.val_set)

    def holdout(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self.data.holdout_set)

    def _batches(self, dataset: torch.utils.data.Dataset) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.world > 1:
            dataset = torch.utils.data.Subset(dataset, my_part(len(dataset), self.rank, self.world))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.eval_batch_size, num_workers=self.workers, pin_memory=self._pin
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def probe(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation images drawn across the classes (a class-sorted folder's first images are a few classes)."""
        labels = torch.as_tensor(self.data.val_set.targets)
        items = [self.data.val_set[i] for i in stratified_indices(labels, min(size, self.n_val), seed).tolist()]
        x = torch.stack([x for x, _ in items]).to(self.device)
        y = torch.as_tensor([y for _, y in items], device=self.device)
        return x, y


def make_source(data, device: torch.device, cfg, rank: int = 0, world: int = 1) -> MemorySource | StreamSource:
    if isinstance(data, InMemoryData):
        return MemorySource(data, device, cfg.train.batch_size, cfg.train.eval_batch_size, rank, world)
    return StreamSource(data, device, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.data.workers, rank, world)
