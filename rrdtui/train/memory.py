"""Memories of the relational methods: RRD's FIFO queue and CRD's momentum banks with its sampler.

All of it lives in registered buffers, so it moves with `.to(device)` and is saved in checkpoints:
a resumed run continues with exactly the queue it stopped with.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RelationQueue(nn.Module):
    """A FIFO queue of the last K teacher embeddings (K x d), no momentum.

    Rows start as unit-norm random vectors (the authors' code normalises along the wrong axis, which
    leaves the first K/B steps with near-zero similarities). K need not be a multiple of the batch
    size: a batch that runs past the end wraps around to the start.
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        keys = F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        self.register_buffer("keys", keys)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, batch: torch.Tensor) -> None:
        batch = batch.detach().to(self.keys.dtype)
        if batch.shape[0] > self.size:  # only the newest K survive a batch larger than the queue
            batch = batch[-self.size :]
        rows = (self.pointer + torch.arange(batch.shape[0], device=batch.device)) % self.size
        self.keys.index_copy_(0, rows, batch)
        self.pointer.copy_((self.pointer + batch.shape[0]) % self.size)


class CRDMemory(nn.Module):
    """CRD's two memory banks over the training set, one of student and one of teacher embeddings.

    Rows are updated per sample index with momentum and renormalised. The normalising constants Z are
    fixed at the first step as mean score x N, as in the original implementation.
    """

    def __init__(self, n_data: int, dim: int, momentum: float, generator: torch.Generator | None = None):
        super().__init__()
        bound = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("student_bank", torch.rand(n_data, dim, generator=generator) * 2 * bound - bound)
        self.register_buffer("teacher_bank", torch.rand(n_data, dim, generator=generator) * 2 * bound - bound)
        # -1 means "not yet fixed"; set from the first batch's scores.
        self.register_buffer("z_student", torch.full((), -1.0))
        self.register_buffer("z_teacher", torch.full((), -1.0))
        self.momentum = momentum

    @property
    def n_data(self) -> int:
        return self.student_bank.shape[0]

    @torch.no_grad()
    def update(self, index: torch.Tensor, student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> None:
        for bank, emb in ((self.student_bank, student_emb), (self.teacher_bank, teacher_emb)):
            rows = bank[index] * self.momentum + emb.detach().float() * (1 - self.momentum)
            bank.index_copy_(0, index, F.normalize(rows, dim=1))


class OtherClassSampler(nn.Module):
    """Draws, for each sample, K negative indices among the samples of other classes, as RepDistiller's
    CIFAR-100 data set does: without replacement, or with replacement when K exceeds them.

    Without replacement, each row draws K distinct positions with `torch.multinomial` over a mask of
    the other classes (one kernel on the device, no Python loop over samples). A K larger than the
    smallest complement of a class draws with replacement, uniformly among the other classes.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int):
        super().__init__()
        labels = labels.long().cpu()
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=num_classes)
        starts = torch.cumsum(counts, 0) - counts
        self.register_buffer("order", order)
        self.register_buffer("counts", counts)
        self.register_buffer("starts", starts)
        self.register_buffer("labels", labels)
        # Fixed by the labels, known on the host: choosing the draw costs no device synchronisation.
        self.fewest_others = int(labels.shape[0] - counts.max())

    def sample(self, index: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """B x (K+1) indices: column 0 is the sample itself (the positive), then K negatives."""
        cls = self.labels[index]
        n_other = self.order.shape[0] - self.counts[cls]
        if k <= self.fewest_others:
            # Weights 1 on the other classes' samples, 0 on the sample's own class: K distinct draws.
            other = (self.labels[None, :] != cls[:, None]).float()
            return torch.cat([index[:, None], torch.multinomial(other, k, replacement=False, generator=generator)], dim=1)
        # With replacement: r uniform in [0, N - n_c), skipping the block of class c in class order.
        u = torch.rand(index.shape[0], k, device=index.device, generator=generator)
        # u < 1, but float rounding can still reach n_other: clamp to the last valid position.
        r = torch.minimum((u * n_other[:, None].float()).long(), n_other[:, None] - 1)
        start = self.starts[cls][:, None]
        r = torch.where(r >= start, r + self.counts[cls][:, None], r)
        return torch.cat([index[:, None], self.order[r]], dim=1)
