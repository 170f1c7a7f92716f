"""The whole training step as one CUDA graph (`train.cuda_graphs: true`).

At batch 64 a cifar_wrn step is some 630 small kernels, and on an H100 launching them takes the
host longer than the GPU takes to run them: the host sets the pace (BENCHMARKS.md, "Ceiling"). A
CUDA graph records the step's kernels once and replays them with one launch.

What is captured is `loop.train_step` itself (one definition of a step): forward, loss, backward,
the optimiser's update and the method's memory update. A graph replays fixed device addresses, so:

- the batch is copied into static input buffers before each replay;
- the learning rate lives in a device tensor that the captured update reads (the loop keeps setting
  plain floats in the optimiser's param_groups; they are copied in before each replay). SGD's fused
  kernel is the update that reads a tensor learning rate without a host read, so the captured step
  runs it (the eager step keeps the foreach update; the two agree to rounding);
- RRD's queue pointer is already a device tensor (rrdtui/train/memory.py);
- the first WARMUP_STEPS steps run eagerly on a side stream (cuDNN's autotuning and the optimiser's
  momentum buffers happen there, not during capture), and they are real training steps.

A batch of another shape (an epoch's last, shorter batch) runs eagerly. Where capture is impossible
(no CUDA, several processes, a method whose loss reads the step or epoch, an operation that reads a
value back to the host) the step runs eagerly, after one warning.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from rrdtui.train.loop import Setup, train_step

log = logging.getLogger("rrdtui.train")

WARMUP_STEPS = 3


def unsupported(setup: Setup) -> str | None:
    """Why this setup's step cannot be captured, or None."""
    # A graph freezes the Python values it was captured with: a loss that reads the step or epoch
    # (DKD's warm-up factor) would keep its capture-time value for the whole run.
    for cls in type(setup.method).__mro__:
        terms = cls.__dict__.get("terms")
        if terms is not None and {"step", "epoch"} & set(terms.__code__.co_names):
            return f"method {setup.cfg.method.name}'s loss changes with the step or epoch"
    if setup.device.type != "cuda":
        return f"it needs a CUDA device (this run trains on {setup.device.type})"
    if setup.group.world > 1:  # DDP's gradient all-reduce and the queue's gather stay eager
        return f"the run trains in {setup.group.world} processes (train.nproc); one process only"
    return None


def make_step(setup: Setup):
    """The step the loop calls, with train_step's signature: train_step itself, or a GraphedStep
    when train.cuda_graphs asks for one."""
    return GraphedStep(setup) if setup.cfg.train.cuda_graphs else train_step


@contextlib.contextmanager
def device_lr(optimizer: torch.optim.Optimizer, lrs: list[torch.Tensor]):
    """The optimiser reads its learning rates from the device tensors `lrs` (one per param group),
    with SGD's fused update, the one that takes a tensor learning rate without a host read. The
    param groups get their floats back afterwards: metrics and checkpoints see what they always do."""
    saved = [(g["lr"], g.get("fused"), g.get("foreach")) for g in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, lrs):
        group.update(lr=lr, fused=True, foreach=False)
    try:
        yield
    finally:
        for group, (lr, fused, foreach) in zip(optimizer.param_groups, saved):
            group.update(lr=lr, fused=fused, foreach=foreach)


class GraphedStep:
    """train_step, captured once as a CUDA graph after WARMUP_STEPS eager steps, then replayed.

    `status` says what it does: "warming up", "captured", or "eager: <why>".
    """

    def __init__(self, setup: Setup):
        self.setup = setup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0
        self.x = self.y = self.index = None  # static inputs, allocated at the first graph-ready step
        self.outputs = None  # the captured step's (loss, terms, correct), rewritten by every replay
        # float32: the fused CUDA kernel reads the learning rate as a float.
        self.lrs = [torch.zeros((), device=setup.device, dtype=torch.float32) for _ in setup.optimizer.param_groups]
        self.loaded_lrs: list[float | None] = [None] * len(self.lrs)
        reason = unsupported(setup)
        self.status = "warming up"
        if reason is not None:
            self._give_up(reason)

    def _give_up(self, reason: str) -> None:
        self.status = f"eager: {reason}"
        log.warning("train.cuda_graphs: %s; the step runs eagerly", reason)

    # -- the graph-ready step: what is captured, and what the warm-up and the tests run eagerly ----

    def load_inputs(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> None:
        if self.x is None:
            self.x, self.y, self.index = torch.empty_like(x), torch.empty_like(y), torch.empty_like(index)
        self.x.copy_(x)
        self.y.copy_(y)
        self.index.copy_(index)

    def load_lrs(self) -> None:
        """Copy the param groups' learning rates into the device tensors, when they changed (an
        asynchronous fill, outside the graph: a fill inside it would replay the capture-time rate)."""
        for i, group in enumerate(self.setup.optimizer.param_groups):
            if group["lr"] != self.loaded_lrs[i]:
                self.lrs[i].fill_(group["lr"])
                self.loaded_lrs[i] = group["lr"]

    def body(self):
        """train_step on the static inputs, the optimiser reading the device learning rates."""
        with device_lr(self.setup.optimizer, self.lrs):
            return train_step(self.setup, self.x, self.y, self.index)

    # -- the step the loop calls ----------------------------------------------------------------

    def fits(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> bool:
        return self.x is None or (x.shape, y.shape, index.shape) == (self.x.shape, self.y.shape, self.index.shape)

    def __call__(self, setup: Setup, x, y, index, step: int = 0, epoch: int = 0):
        if self.status.startswith("eager") or not self.fits(x, y, index):
            return train_step(setup, x, y, index, step, epoch)
        if self.graph is None and self.calls < WARMUP_STEPS:
            self.calls += 1
            return self._warm_up(x, y, index)
        if self.graph is None:
            self._capture(x, y, index)
            if self.graph is None:
                return train_step(setup, x, y, index, step, epoch)
        # Capture records kernels without running them: this batch, too, is trained by the replay.
        self.load_inputs(x, y, index)
        self.load_lrs()
        self.graph.replay()
        return self.outputs

    def _warm_up(self, x, y, index):
        """A real training step, graph-ready, on a side stream (as PyTorch's capture recipe asks)."""
        device = self.setup.device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            self.load_inputs(x, y, index)
            self.load_lrs()
            outputs = self.body()
        torch.cuda.current_stream(device).wait_stream(stream)
        return outputs

    def _capture(self, x, y, index) -> None:
        self.load_inputs(x, y, index)
        self.load_lrs()
        graph = torch.cuda.CUDAGraph()
        generator = getattr(self.setup.method, "generator", None)  # CRD draws its negatives with it
        if generator is not None and generator.device.type == "cuda":
            graph.register_generator_state(generator)
        # Gradients set to None now are allocated by the captured backward in the graph's own memory
        # pool: every replay writes them afresh, no zeroing needed.
        self.setup.optimizer.zero_grad(set_to_none=True)
        try:
            # thread_local: the store's heartbeat thread may run while the step is captured.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs = self.body()
        except Exception as exc:  # any failure to capture: train on, eagerly
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.setup.optimizer.zero_grad(set_to_none=True)  # drop what the failed capture left
            self._give_up(f"capture failed ({type(exc).__name__}: {reason})")
            return
        self.graph, self.outputs, self.status = graph, outputs, "captured"
