"""Sections 1 and 2: roofline (FLOPs, MFU against the in-process GEMM peak, our model against
a hand-written nn.Sequential) and the cost of context (ParseNet / baseline time ratios).

All five VGG-16 LargeFOV models are timed in the same interleaved rounds, forward
(eval, inference_mode) and train step (SGD, cross-entropy) separately. The GEMM rate is
measured after every round, so MFU compares a model with the GEMM of the same moment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import (
    Section,
    Settings,
    count_flops,
    gemm_flops_per_s,
    interleave,
    make_forward,
    make_train_step,
    median,
    paired_ratio,
    ratio_range,
)
from benchmarks.plain import copy_weights_from, plain_largefov, pre_upsample_difference
from parsenet.models import parsenet_vgg16

__all__ = ["run", "builders", "LABELS"]

NUM_CLASSES = 21
AGAIN = "baseline again"
FIVE_LAYER = ("conv3", "conv4", "conv5", "fc7")

LABELS = {
    "plain": "hand-written nn.Sequential LargeFOV",
    "baseline": "our LargeFOV baseline (no context, no L2Norm)",
    "late": "ParseNet fc7 + pool6, late fusion",
    "early": "ParseNet fc7 + pool6, early fusion",
    "five": "ParseNet conv3..fc7 + pool6, late fusion",
}


def builders(width: float) -> dict[str, Callable[[], nn.Module]]:
    """The five models of sections 1-2 (``width`` < 1 only for --quick)."""

    def vgg(**kw: Any) -> Callable[[], nn.Module]:
        return lambda: parsenet_vgg16(num_classes=NUM_CLASSES, width=width, **kw)

    return {
        "plain": lambda: plain_largefov(NUM_CLASSES, width=width),
        "baseline": vgg(context=False, normalize=False),
        "late": vgg(),
        "early": vgg(fusion="early"),
        "five": vgg(features=FIVE_LAYER),
    }


def _mfu(flops: int, times: list[float], gemm: list[float]) -> float:
    """Median over rounds of (FLOPs / time) / GEMM FLOP/s of the same round."""
    return median([flops / t / g for t, g in zip(times, gemm, strict=True)])


@dataclass
class _Measured:
    """Sections 1-2's measurements, each keyed by kind (forward, train) and then model."""

    models: list[str]  # the five of ``builders``, in their order
    flops: dict[str, dict[str, int]]  # this one by model, then kind
    seconds: dict[str, dict[str, list[float]]]
    gemm: dict[str, list[float]]  # GEMM FLOP/s after each round
    mfu: dict[str, dict[str, float]]
    ratios: dict[str, dict[str, float]]  # "model/reference": median per-round ratio
    ranges: dict[str, dict[str, str]]  # the same pairs' per-round ranges


def _flops(build: Callable[[], nn.Module], size: int) -> dict[str, int]:
    return {
        "forward": count_flops(build, size, train=False),
        "train": count_flops(build, size, train=True),
    }


def _time_interleaved(
    models: dict[str, nn.Module], x: Tensor, settings: Settings
) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[float]]]:
    """(seconds per kind and model, GEMM FLOP/s after each round per kind)."""
    timings: dict[str, dict[str, list[float]]] = {}
    gemm: dict[str, list[float]] = {}
    for kind in ("forward", "train"):
        gemm[kind] = []
        fns = {
            name: (make_forward(m, x) if kind == "forward" else make_train_step(m, x, NUM_CLASSES))
            for name, m in models.items()
        }
        # The baseline timed a second time in each round: the A/A ratio is the noise floor.
        fns[AGAIN] = fns["baseline"]
        timings[kind] = interleave(
            fns,
            min_rounds=settings.min_rounds,
            max_rounds=settings.max_rounds,
            budget_s=settings.budget_s,
            on_round=lambda k=kind: gemm[k].append(gemm_flops_per_s(calls=2)),
            desc=f"roofline {kind}",
        )
    return timings, gemm


def _measured(
    names: list[str],
    flops: dict[str, dict[str, int]],
    timings: dict[str, dict[str, list[float]]],
    gemm: dict[str, list[float]],
) -> _Measured:
    """MFU of each model, and each model's (and the A/A baseline's) time against the plain
    model and the baseline."""
    mfu = {
        kind: {name: _mfu(flops[name][kind], timings[kind][name], gemm[kind]) for name in names}
        for kind in timings
    }
    pairs = [(n, ref) for n in [*names, AGAIN] for ref in ("plain", "baseline") if n != ref]
    ratio = {
        kind: {f"{n}/{ref}": paired_ratio(timings[kind][n], timings[kind][ref]) for n, ref in pairs}
        for kind in timings
    }
    spread = {
        kind: {f"{n}/{ref}": ratio_range(timings[kind][n], timings[kind][ref]) for n, ref in pairs}
        for kind in timings
    }
    return _Measured(names, flops, timings, gemm, mfu, ratio, spread)


def _roofline_section(settings: Settings, m: _Measured, same_net: float) -> Section:
    size = settings.size
    details = {
        "input": [1, 3, size, size],
        "models": LABELS,
        "width": settings.width,
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "flops": m.flops,
        "seconds": m.seconds,
        "gemm_flops_per_s": m.gemm,
        "mfu": m.mfu,
        "ratios": m.ratios,
        "ratio_ranges": m.ranges,
        "plain_vs_baseline_max_abs_diff": same_net,
    }
    roof = Section(
        "roofline",
        f"1. Roofline at 1x3x{size}x{size} (fp32, {torch.get_num_threads()} threads)",
        details=details,
    )
    _add_rates(roof, m)
    _add_mfu(roof, m)
    for name in ("baseline", "late"):
        for kind in ("forward", "train"):
            key = f"{name}/plain"
            roof.add_goal(
                f"{name} / plain nn.Sequential, {kind}",
                m.ratios[kind][key],
                "<=",
                1.02,
                note=m.ranges[kind][key],
            )
    return roof


def _add_rates(roof: Section, m: _Measured) -> None:
    """The GEMM rate, the FLOPs, and each model's median time."""
    all_gemm = m.gemm["forward"] + m.gemm["train"]
    roof.add(
        "fp32 GEMM (torch.mm 2048^2), median of rounds",
        median(all_gemm) / 1e9,
        "{:.1f} GFLOP/s",
        note=f"best {max(all_gemm) / 1e9:.1f}",
    )
    flops = m.flops
    roof.add(
        "FLOPs forward / train step (ParseNet late)",
        f"{flops['late']['forward'] / 1e9:.1f} / {flops['late']['train'] / 1e9:.1f} G",
        note=f"baseline {flops['baseline']['forward'] / 1e9:.2f} G forward",
    )
    for kind in ("forward", "train"):
        times = ", ".join(f"{n} {median(m.seconds[kind][n]) * 1e3:.0f}" for n in m.models)
        roof.add(f"{kind} time, ms (median)", times)


def _add_mfu(roof: Section, m: _Measured) -> None:
    """MFU of plain / baseline / ParseNet, and the goal that ours match the plain model's."""
    mfu = m.mfu
    for kind in ("forward", "train"):
        text = " / ".join(f"{mfu[kind][n]:.2f}" for n in ("plain", "baseline", "late"))
        roof.add(f"MFU {kind}: plain / baseline / ParseNet", text)
        for name in ("baseline", "late"):
            roof.add(
                f"MFU {kind}, {name} vs plain",
                mfu[kind][name],
                "{:.2f}",
                goal=f">= plain {mfu[kind]['plain']:.2f}",
                met=mfu[kind][name] >= mfu[kind]["plain"],
            )


def _context_section(size: int, m: _Measured) -> Section:
    ratio, spread = m.ratios, m.ranges
    ctx = Section(
        "context",
        f"2. Cost of context at 1x3x{size}x{size} (ParseNet / baseline)",
        details={"ratios": ratio, "rounds": {k: len(v["late"]) for k, v in m.seconds.items()}},
    )
    for kind in ("forward", "train"):
        key = f"{AGAIN}/baseline"
        ctx.add(
            f"noise floor: baseline / itself (A/A), {kind}",
            ratio[kind][key],
            "{:.3f}",
            note=spread[kind][key],
        )
    for name in ("late", "early"):
        for kind in ("forward", "train"):
            key = f"{name}/baseline"
            ctx.add_goal(
                f"{LABELS[name]} / baseline, {kind}",
                ratio[kind][key],
                "<=",
                1.01,
                note=spread[kind][key],
            )
    for kind in ("forward", "train"):
        key = "five/baseline"
        ctx.add(
            f"{LABELS['five']} / baseline, {kind}",
            ratio[kind][key],
            "{:.3f}",
            note=f"no goal; {spread[kind][key]}",
        )
    return ctx


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    """Sections 1 and 2; ``shared`` gets ParseNet's train-step rate for section 4."""
    size = settings.size
    torch.manual_seed(0)
    builds = builders(settings.width)
    models = {name: build() for name, build in builds.items()}
    copy_weights_from(models["plain"], models["baseline"])
    same_net = pre_upsample_difference(
        models["plain"], models["baseline"], torch.randn(1, 3, 64, 64)
    )
    x = torch.randn(1, 3, size, size)
    flops = {name: _flops(build, size) for name, build in builds.items()}
    timings, gemm = _time_interleaved(models, x, settings)
    measured = _measured(list(models), flops, timings, gemm)
    shared["train_images_per_s"] = 1.0 / median(timings["train"]["late"])
    shared["train_size"] = size
    return [_roofline_section(settings, measured, same_net), _context_section(size, measured)]
