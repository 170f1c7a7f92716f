"""Where training batches come from: an in-memory data set on the device, or a streaming one.

Both hand the loop the same things: shuffled (x, y, index) batches from any position of an epoch's
permutation (so a run resumes mid-epoch exactly), validation batches, a fixed probe set, and the
labels of every training sample (CRD draws its negatives from other classes).
"""

from __future__ import annotations

from typing import Iterator

import torch

from rrdtui.train.data import BatchAugment, InMemoryData, StreamingData


def batches_per_epoch(n: int, batch_size: int) -> int:
    # BatchNorm cannot train on a batch of one: a last batch of a single sample is dropped.
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 else 0)


class MemorySource:
    """The whole data set on the device as uint8, augmented there per batch (no loader, no workers)."""

    def __init__(self, data: InMemoryData, device: torch.device, batch_size: int, eval_batch_size: int):
        for name in ("train_x", "train_y", "val_x", "val_y"):
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
        self.train_labels = data.train_y
        self.per_epoch = batches_per_epoch(self.n_train, batch_size)

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.n_train, device=self.device, generator=generator)

    def epoch(self, perm: torch.Tensor, start: int, generator: torch.Generator) -> Iterator[tuple]:
        for i in range(start, self.per_epoch):
            index = perm[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.augment.train(self.data.train_x[index], generator), self.data.train_y[index], index

    def val(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.n_val, self.eval_batch_size):
            stop = start + self.eval_batch_size
            yield self.augment.normalise(self.data.val_x[start:stop]), self.data.val_y[start:stop]

    def probe(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment.normalise(self.data.val_x[:size]), self.data.val_y[:size]


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

    def __init__(self, data: StreamingData, device: torch.device, batch_size: int, eval_batch_size: int, workers: int):
        self.data = data
        self.device = device
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.workers = workers
        self.num_classes = data.num_classes
        self.n_train = len(data.train_set)
        self.n_val = len(data.val_set)
        first, _ = data.val_set[0]
        self.channels = int(first.shape[0])
        self.image_size = int(first.shape[-1])
        self.train_labels = torch.as_tensor(data.train_set.targets, device=device)
        self.per_epoch = batches_per_epoch(self.n_train, batch_size)
        self._pin = device.type == "cuda"

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.n_train, device=self.device, generator=generator)

    def epoch(self, perm: torch.Tensor, start: int, generator: torch.Generator) -> Iterator[tuple]:
        order = perm.cpu()
        index_batches = [
            order[i * self.batch_size : (i + 1) * self.batch_size].tolist() for i in range(start, self.per_epoch)
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
        loader = torch.utils.data.DataLoader(
            self.data.val_set, batch_size=self.eval_batch_size, num_workers=self.workers, pin_memory=self._pin
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def probe(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.data.val_set[i] for i in range(min(size, self.n_val))]
        x = torch.stack([x for x, _ in items]).to(self.device)
        y = torch.as_tensor([y for _, y in items], device=self.device)
        return x, y


def make_source(data, device: torch.device, cfg) -> MemorySource | StreamSource:
    if isinstance(data, InMemoryData):
        return MemorySource(data, device, cfg.train.batch_size, cfg.train.eval_batch_size)
    return StreamSource(data, device, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.data.workers)
