"""Several processes, one run: PyTorch's torch.distributed, as torchrun launches it.

`python -m torch.distributed.run --nproc-per-node N -m rrdtui.train.worker ...` starts N copies of the
trainer (rrdtui.launcher builds the command from train.nproc and train.nnodes). This module is what
they share: the process group (NCCL between GPUs, gloo on the CPU), this process's rank, and the few
collective operations the loop needs. A run of one process gets `SINGLE`, whose operations are the
identity: no collective, nothing to pay, the one-process path as it always was.

Who does what:
- rank 0 owns the run: it alone reads the store, the teacher's weights and the checkpoint (other
  nodes need no shared file system for them), hands them to the other ranks (`share`), and is the
  only writer of the store, the checkpoints and the log;
- every rank trains its share of each global batch (rrdtui.train.sources), BatchNorm sees the global
  batch (`convert_batchnorm`), DDP averages the gradients, and the methods' memories take the keys of
  every rank (`gather`): a step is the step one process takes on the whole batch.

Ranks: torchrun numbers the processes of several nodes in the order of their rendezvous, which need
not put rank 0 on the node that holds the store. Here the processes of the launch that owns the run
(the worker's `--runs`) come first and those that joined it (`--join`) after, each in torchrun's
order, so rank 0 is always a process that can reach the store.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch.distributed import _functional_collectives as funcol
import torch.nn as nn

# How long the other ranks wait for rank 0 between runs: it may be waiting for a teacher that another
# trainer is still training. Training collectives keep torch's default timeout.
HANDSHAKE_TIMEOUT = datetime.timedelta(days=7)


class SharedFailure(Exception):
    """Rank 0 could not produce what it shares (a teacher file that does not load, ...): every rank
    raises this, with rank 0's one-line message, so they all leave the run together."""


class Group:
    """The processes that train a run. This base class is one process (rank 0 of 1): every
    operation is the identity and communicates with no one."""

    rank = 0
    world = 1
    local_rank = 0

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (the ranks agree on a stop)."""
        return flag

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over the ranks, in place."""
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor (the same shape on each), concatenated in rank order, without gradient."""
        return tensor

    def share(self, load: Callable[[], Any] | None) -> Any:
        """What `load()` returns on rank 0 (which alone calls it), on every rank."""
        return load()

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients over the ranks (a step that DDP does not drive: a first stage)."""

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers on every rank (BatchNorm statistics when train.sync_bn is off)."""

    def convert_batchnorm(self, module: nn.Module, device: torch.device) -> nn.Module:
        """module with BatchNorm layers that normalise over the global batch."""
        return module

    def data_parallel(self, module: nn.Module, device: torch.device) -> nn.Module | None:
        """module wrapped in DDP, which averages its gradients over the ranks in backward; None alone."""
        return None


SINGLE = Group()


class ProcessGroup(Group):
    """This process's place among the processes torchrun started (WORLD_SIZE > 1 in the environment)."""

    def __init__(self, owner: bool):
        _die_with_parent()
        self.local_rank = int(os.environ["LOCAL_RANK"])
        cuda = torch.cuda.is_available()
        if cuda and self.local_rank < torch.cuda.device_count():
            torch.cuda.set_device(self.local_rank)  # NCCL and the CUDA tensors of this rank live there
        # One default group for both: CUDA tensors go over NCCL, CPU tensors over gloo.
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
        # Objects (configurations, weights, checkpoints) travel over gloo on a group of their own,
        # whose long timeout lets the other ranks wait while rank 0 waits for a teacher.
        self.objects = dist.new_group(backend="gloo", timeout=HANDSHAKE_TIMEOUT)
        self.world = dist.get_world_size()
        owners: list[Any] = [None] * self.world
        dist.all_gather_object(owners, owner, group=self.objects)
        if not any(owners):
            raise RuntimeError("every process joined (--join): one launch must own the run (rrdtui run or resume)")
        # order[r]: torchrun's rank of our rank r (the owning launch first).
        self.order = sorted(range(self.world), key=lambda r: (not owners[r], r))
        self.rank = self.order.index(dist.get_rank())
        self.source = self.order[0]  # torchrun's rank of our rank 0

    def any(self, flag: bool) -> bool:
        agreed = torch.tensor([float(flag)])  # on the CPU (gloo): a host value either way
        dist.all_reduce(agreed)
        return bool(agreed.item() > 0)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor)
        return torch.cat([parts[r] for r in self.order])

    def share(self, load: Callable[[], Any] | None) -> Any:
        if self.rank == 0:
            try:
                value = load()
            except Exception as exc:
                failure = SharedFailure(str(exc) or type(exc).__name__)
                self._broadcast(failure)
                raise failure from exc
            self._broadcast(value)
            return value
        value = self._broadcast(None)
        if isinstance(value, SharedFailure):
            raise value
        return value

    def _broadcast(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=self.source, group=self.objects)
        return box[0]

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def broadcast_buffers(self, module: nn.Module) -> None:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=self.source)

    def convert_batchnorm(self, module: nn.Module, device: torch.device) -> nn.Module:
        if device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return GlobalBatchNorm.convert(module)

    def data_parallel(self, module: nn.Module, device: torch.device) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        # No buffer broadcast: BatchNorm's statistics are global already, and the methods' memories
        # (CRD's banks hold a row per training image) are kept equal by gathered updates, not copied.
        return DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
        )


def broken(exc: BaseException) -> bool:
    """Did a collective fail because another rank is gone (killed, out of memory, failed)?"""
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("Connection closed by peer", "Connection reset"))
    )


def _die_with_parent() -> None:
    """torchrun starts each rank in a session of its own: were torchrun killed (kill -9), its ranks
    would live on as orphans. Ask the kernel to kill this one when its parent dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch on the CPU, where torch's SyncBatchNorm refuses to run (it
    needs a GPU, torch 2.15). The per-channel sums of every rank are added by one autograd-aware
    all-reduce, so the statistics and their gradients are those of one process holding the whole
    batch; the sums are float64, as the CPU's own BatchNorm accumulates. Evaluation uses the running
    statistics, as BatchNorm does. State-dict keys are BatchNorm's."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        channels = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        wide = x.double()
        count = wide.new_full((1,), x.numel() // channels)
        local = torch.cat([wide.sum(dims), (wide * wide).sum(dims), count])
        sums = funcol.all_reduce(local, "sum", dist.group.WORLD)  # its backward all-reduces the gradient
        n = sums[-1]
        mean = sums[:channels] / n
        var = sums[channels : 2 * channels] / n - mean * mean  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.double()
        shift = -mean * scale + (self.bias.double() if self.affine else 0)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Every BatchNorm layer of module as a GlobalBatchNorm holding the same parameters and
        buffers (as nn.SyncBatchNorm.convert_sync_batchnorm does for the GPU)."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
            new.train(module.training)
            return new
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child))
        return module
