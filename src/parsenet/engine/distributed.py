"""Multi-process training with torch.distributed, started by ``torchrun``.

This module is the one place that reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``; ``MASTER_ADDR``/``MASTER_PORT`` are read by torch's ``env://`` rendezvous).
Without them the run is a single process and every helper here is a no-op.

    torchrun --nproc_per_node=4 -m parsenet.cli train --config configs/cpu/siftflow.yaml

Backend: NCCL when the run uses CUDA, gloo on CPU. Models are wrapped in PyTorch's own
:class:`~torch.nn.parallel.DistributedDataParallel`; only rank 0 logs, shows progress and
writes files.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DistContext", "init_distributed", "wrap_model", "barrier",
           "all_reduce_sum", "cleanup", "StopOnSigterm", "SIGTERM_EXIT_CODE",
           "StoppedBySigterm"]

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str, timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group described by torchrun's environment (if any).

    ``device_type`` is ``"cuda"`` or ``"cpu"``: it picks the backend (nccl / gloo).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, init_method="env://", rank=rank,
                                world_size=world_size,
                                timeout=timedelta(minutes=timeout_minutes))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed; ``model`` otherwise.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts
    from the same weights even if their seeds differ.
    """
    if not ctx.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks (in place); identity in a single process."""
    if ctx.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


class StoppedBySigterm(SystemExit):
    """The run stopped after SIGTERM, ``saved`` its checkpoint; exit status 143."""

    def __init__(self, saved: str | os.PathLike, rank: int = 0) -> None:
        super().__init__(SIGTERM_EXIT_CODE)
        self.saved, self.rank = Path(saved), rank


class StopOnSigterm:
    """Turns SIGTERM (a cluster scheduler's preemption notice) into a flag that the training
    loop reads between iterations, so it can save a checkpoint before exiting. The trainer
    sums the flag over ranks, so every rank stops after the same iteration."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
