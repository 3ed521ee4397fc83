"""What every section shares: run settings, interleaved timing, train steps, peak memory,
result rows with goals."""

from __future__ import annotations

import gc
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

__all__ = [
    "Settings",
    "FULL",
    "QUICK",
    "Section",
    "Skipped",
    "interleave",
    "paired_ratio",
    "ratio_range",
    "median",
    "make_train_step",
    "make_forward",
    "gemm_flops_per_s",
    "PeakMemory",
    "count_flops",
]


@dataclass(frozen=True)
class Settings:
    """Sizes and repeats of one run; ``QUICK`` keeps every code path but shrinks the work."""

    quick: bool
    size: int  # input side of sections 1-2 (and the train step of section 4)
    width: float  # channel multiplier of the VGG models of sections 1-2, 4 and 5
    min_rounds: int  # interleaved rounds measured at least, after one warm-up round
    max_rounds: int
    budget_s: float  # a section stops adding rounds past this (never below min_rounds)
    l2_shapes: tuple[tuple[int, int, int, int], ...]
    l2_rounds: int
    l2_compile: bool
    infer_size: int
    infer_compile: bool
    peer_size: int
    peer_train_rounds: int  # after one warm-up step each
    slow_rounds: int  # rounds of the ResNet-50 forward passes at 500 x 500 (section 6)
    scaling_sizes: tuple[int, ...]
    scaling_width: float
    scaling_real_sizes: tuple[int, ...]  # also measured at full width, whole image only
    slide_window: int
    slide_stride: int
    loader_seconds: float
    released_val_images: int = 12  # val images each runtime labels (section released)


FULL = Settings(
    quick=False,
    size=320,
    width=1.0,
    min_rounds=3,
    max_rounds=7,
    budget_s=60.0,
    l2_shapes=((4, 1024, 40, 40), (4, 256, 128, 128)),
    l2_rounds=15,
    l2_compile=True,
    infer_size=500,
    infer_compile=True,
    peer_size=500,
    peer_train_rounds=1,
    slow_rounds=2,
    scaling_sizes=(256, 512, 1024, 2048),
    scaling_width=0.5,
    scaling_real_sizes=(256, 512),
    slide_window=512,
    slide_stride=341,
    loader_seconds=4.0,
)
QUICK = Settings(
    quick=True,
    size=96,
    width=0.25,
    min_rounds=1,
    max_rounds=1,
    budget_s=5.0,
    l2_shapes=((2, 256, 32, 32),),
    l2_rounds=5,
    l2_compile=False,
    infer_size=128,
    infer_compile=False,
    peer_size=64,
    peer_train_rounds=1,
    slow_rounds=1,
    scaling_sizes=(64, 128, 256),
    scaling_width=0.125,
    scaling_real_sizes=(64, 96),
    slide_window=128,
    slide_stride=96,
    loader_seconds=1.0,
    released_val_images=2,
)


class Skipped(Exception):
    """Raised by a section that cannot run here; the message says why."""


@dataclass
class Section:
    """One section's outcome: table rows (metric, value, goal) and raw details for the JSON."""

    key: str
    title: str
    status: str = "ok"  # ok | skipped | error
    reason: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(
        self,
        metric: str,
        value: float | str | None,
        fmt: str = "{:.3g}",
        goal: str | None = None,
        met: bool | None = None,
        note: str = "",
    ) -> None:
        """A table row. ``goal`` is text such as ``"<= 1.02"``; ``met`` whether it holds."""
        if isinstance(value, float) and value != value:  # NaN: nothing measured
            value = None
        text = value if isinstance(value, str) else ("n/a" if value is None else fmt.format(value))
        self.rows.append(
            {"metric": metric, "value": value, "text": text, "goal": goal, "met": met, "note": note}
        )

    def add_goal(
        self, metric: str, value: float, op: str, target: float, fmt: str = "{:.3f}", note: str = ""
    ) -> None:
        """A row with a numeric goal ``value <op> target``; ``met`` is computed."""
        met = value <= target if op == "<=" else value >= target
        self.add(metric, value, fmt, goal=f"{op} {target:g}", met=bool(met), note=note)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "rows": self.rows,
            "details": self.details,
            "seconds": round(self.seconds, 1),
        }


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def interleave(
    fns: dict[str, Callable[[], object]],
    *,
    min_rounds: int,
    max_rounds: int,
    budget_s: float,
    warmup: int = 1,
    on_round: Callable[[], None] | None = None,
    desc: str = "",
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in interleaved rounds.

    Round r calls the functions in an order rotated by r, reversed in odd rounds, so none
    always runs first or after the same neighbour. Rounds continue past ``min_rounds``
    while the next one is expected to end within ``budget_s`` (counted from the first
    measured round). With ``desc``, a progress bar counts the calls on stderr.
    """
    names = list(fns)
    bar = tqdm(
        total=len(names) * (warmup + max_rounds),
        desc=desc,
        unit="call",
        leave=False,
        file=sys.stderr,
        disable=not desc,
    )
    for _ in range(warmup):
        for name in names:
            fns[name]()
            bar.update()
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    r = 0
    while r < max_rounds:
        elapsed = time.perf_counter() - start
        if r >= min_rounds and elapsed + elapsed / r > budget_s:
            break
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        for name in order[::-1] if r % 2 else order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
            bar.update()
        r += 1
        if on_round is not None:
            on_round()
    bar.close()
    return times


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[i] / b[i] (A and B timed in the same round)."""
    return median([x / y for x, y in zip(a, b, strict=True)])


def ratio_range(a: Sequence[float], b: Sequence[float]) -> str:
    """The per-round ratios' range as text, e.g. ``"rounds 0.98-1.03"``: the noise."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return f"{len(ratios)} rounds {min(ratios):.3f}-{max(ratios):.3f}" if ratios else ""


def make_forward(model: nn.Module, x: Tensor) -> Callable[[], object]:
    """One inference forward: eval mode, ``torch.inference_mode``."""
    model.eval()

    def forward() -> object:
        with torch.inference_mode():
            return model(x)

    return forward


def _logits(out: Any) -> Tensor:
    return out["out"] if isinstance(out, dict) else out  # torchvision segmentation models


def make_train_step(
    model: nn.Module,
    x: Tensor,
    num_classes: int,
    seed: int = 0,
    prepare: Callable[[nn.Module], None] | None = None,
) -> Callable[[], object]:
    """One SGD step (momentum 0.9, small lr) on cross-entropy with random labels.

    ``prepare`` runs after ``model.train()`` (e.g. to put one BatchNorm back in eval).
    """
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (x.shape[0], *x.shape[-2:]), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)

    def step() -> object:
        model.train()
        if prepare is not None:
            prepare(model)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(_logits(model(x)), target, ignore_index=255)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def count_flops(
    build: Callable[[], nn.Module], size: int, *, train: bool, num_classes: int = 21
) -> int:
    """FLOPs (torch's FlopCounterMode) of one forward, or forward + backward, at 1x3xSxS.

    Counted on the meta device: nothing is computed, so this is free at any size.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build()
        x = torch.randn(1, 3, size, size)
        counter = FlopCounterMode(display=False)
        if train:
            model.train()
            target = torch.randint(0, num_classes, (1, size, size))
            with counter:
                F.cross_entropy(_logits(model(x)), target).backward()
        else:
            model.eval()
            with counter, torch.no_grad():
                model(x)
    return int(counter.get_total_flops())


def gemm_flops_per_s(n: int = 2048, calls: int = 3) -> float:
    """Best FLOP/s of ``calls`` fp32 torch.mm n x n x n (after one untimed call)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field_name}:\s+(\d+) kB", f.read(), re.M)
    if match is None:
        raise Skipped(f"/proc/self/status has no {field_name}")
    return int(match.group(1))


class PeakMemory:
    """Peak memory of a block, two ways (bytes):

    ``allocated``: the high-water mark of bytes held through PyTorch's CPU allocator above
    the level at the block's start, replayed from the profiler's memory events (every
    tensor, including kernels' internal buffers, whether or not the allocator reuses
    pages). ``resident``: growth of the process's resident-set high-water mark (Linux:
    reset through /proc/self/clear_refs), which also sees non-PyTorch memory but misses
    pages that freed-and-reused allocations had already touched.
    """

    def __enter__(self) -> PeakMemory:
        from torch.profiler import ProfilerActivity, profile

        gc.collect()
        self.allocated = self.resident = 0
        self._rss_start = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._rss_start = _status_kib("VmRSS") * 1024
        except (OSError, Skipped):
            pass
        self._profile = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._profile.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._profile.__exit__(*exc)
        if self._rss_start is not None:
            self.resident = max(0, _status_kib("VmHWM") * 1024 - self._rss_start)
        events = [
            e for e in self._profile.profiler.kineto_results.events() if e.name() == "[memory]"
        ]
        level = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            level += e.nbytes()
            peak = max(peak, level)
        self.allocated = peak


def available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            match = re.search(r"^MemAvailable:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return 0
    return int(match.group(1)) * 1024 if match else 0
