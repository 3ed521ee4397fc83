"""An endless, seeded, resumable training sampler, and per-sample seeding of augmentation.

Training is counted in iterations, not epochs, so the loader never ends: epoch ``e`` is
torch's :class:`~torch.utils.data.DistributedSampler` order with ``set_epoch(e)`` (shuffled
with ``seed + e``; with one process it is a plain seeded permutation), epochs follow one
another forever.

Exact resume. The position is the number of samples this rank has consumed, which the
trainer knows exactly (``iterations * batch_size * accumulate``) regardless of how far the
DataLoader's workers have prefetched; a resumed run starts the same epoch at the same offset.

Augmentation. Each sample travels with a seed derived from ``(seed, epoch, position of the
sample in the epoch's global order)``; :class:`SeededSamples` seeds torch, numpy and python
``random`` with it around the transform. So a sample's crop, scale and flip depend only on
where it sits in the global order: not on the worker that loads it, not on whether the run
was resumed, and not on how the global batch is split over processes (2 ranks x 2 images
see the same augmented images as 1 process x 4).
"""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from parsenet.errors import DataError

__all__ = ["ResumableSampler", "SeededSamples", "sample_seed", "worker_init_fn", "seed_everything"]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A well-mixed 63-bit seed for the sample at ``position`` of epoch ``epoch``."""
    state = np.random.SeedSequence([seed, epoch, position]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class ResumableSampler(Sampler[tuple[int, int]]):
    """Yields ``(dataset index, sample seed)`` pairs forever for one rank.

    Args:
        dataset_size: number of samples.
        seed: the run's seed.
        rank, world_size: this process's share (DistributedSampler's ``rank::world_size``).
        shuffle: reshuffle every epoch (with ``seed + epoch``).
    """

    def __init__(self, dataset_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        if dataset_size < 1:
            raise DataError("the training dataset is empty")  # a ValueError too
        self.dataset_size = dataset_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.consumed = 0  # samples this rank has already used

    @property
    def per_rank(self) -> int:
        """Samples per rank per epoch (DistributedSampler pads the epoch to a multiple)."""
        return math.ceil(self.dataset_size / self.world_size)

    def state_dict(self, consumed: int) -> dict[str, Any]:
        return {"consumed": int(consumed), "dataset_size": self.dataset_size,
                "world_size": self.world_size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Continue after ``state["consumed"]`` samples; return whether the resume is exact.

        With another dataset size or number of processes the run continues at the same
        global sample count, which is the best available but not the same sample order.
        """
        exact = (state["dataset_size"] == self.dataset_size
                 and state["world_size"] == self.world_size and state["seed"] == self.seed)
        consumed = int(state["consumed"])
        if state["world_size"] != self.world_size:
            consumed = consumed * int(state["world_size"]) // self.world_size
        self.consumed = consumed
        return exact

    def _epoch_order(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(range(self.dataset_size), num_replicas=self.world_size,
                                     rank=self.rank, shuffle=self.shuffle, seed=self.seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.consumed, self.per_rank)
        while True:
            order = self._epoch_order(epoch)
            for j in range(offset, len(order)):
                position = self.rank + j * self.world_size  # in the epoch's global order
                yield order[j], sample_seed(self.seed, epoch, position)
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # one epoch; the iterator itself never ends
        return self.per_rank


@contextmanager
def _seeded(seed: int):
    """Seed torch (CPU), numpy and python ``random``; restore their states afterwards so the
    caller's random streams (e.g. dropout in the main process) are untouched."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class SeededSamples(Dataset):
    """Wraps a dataset so that ``[(index, seed)]`` loads sample ``index`` with all random
    generators seeded by ``seed`` (see the module docstring)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with _seeded(seed):
            return self.dataset[index]


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy and python ``random`` in a DataLoader worker from its torch seed (which the
    loader derives from its generator), so workers never share a stream. A worker decodes and
    resizes one image at a time: OpenCV's own thread pool would only fight the training
    process for the cores.

    A worker ignores SIGINT and SIGTERM. Ctrl-C, ``pkill`` or a container stop signal the
    whole process group; a worker that died of it would make the loader raise in the
    training process before that process could save its checkpoint. The training process
    handles the signal and shuts its workers down: a loader using this function must be
    stopped with :func:`stop_loader_workers` on every way out, or the interpreter's exit
    hangs on its workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def stop_loader_workers(batches: Iterator) -> None:
    """Stop a DataLoader iterator's workers now, through the loader's own shutdown (the one
    its ``__del__`` runs). Dropping the reference is not enough: a generator or an
    exception's traceback can keep the iterator alive to interpreter exit. There torch skips
    its shutdown and multiprocessing stops the workers with SIGTERM, which
    :func:`worker_init_fn`'s workers ignore, and then joins them: the exit would hang."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # absent without workers
    if shutdown is not None:
        shutdown()


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
