"""Section 3: L2Norm forward + backward time and bytes saved for backward.

Variants, all with the same learned per-channel scale ``gamma``:
    ours         parsenet.layers.L2Norm (custom autograd Function)
    naive        x / x.norm(dim=1, keepdim=True) * gamma
    F.normalize  F.normalize(x, dim=1) * gamma
    compiled     parsenet.layers.l2norm.compiled_l2_normalize if it exists, else our own
                 torch.compile(l2_normalize_reference) (labelled as such)
    recompute    benchmarks.proposals.recompute_l2_normalize: ours, but saving only x and
                 gamma and recomputing the norm in the backward (not used by parsenet)
One call = forward, then ``torch.autograd.grad`` of a fixed random output gradient with
respect to the input and gamma. Saved bytes are the distinct storages that autograd packs
(``saved_tensors_hooks``) during the forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import Section, Settings, interleave, median, paired_ratio
from benchmarks.proposals import recompute_l2_normalize
from parsenet.layers import L2Norm, l2_normalize_reference

__all__ = ["run", "saved_bytes"]

Fn = Callable[[Tensor], Tensor]


def _compiled() -> tuple[Callable[..., Tensor], str]:
    try:
        from parsenet.layers.l2norm import compiled_l2_normalize
    except ImportError:
        return torch.compile(l2_normalize_reference), "torch.compile(l2_normalize_reference)"
    return compiled_l2_normalize, "parsenet compiled_l2_normalize"


def saved_bytes(fn: Fn, x: Tensor) -> tuple[int, int]:
    """(bytes of all distinct storages saved for backward, of those other than x's)."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    total = sum(storages.values())
    return total, total - storages.get(x.untyped_storage().data_ptr(), 0)


def _step(fn: Fn, x: Tensor, gamma: Tensor, grad: Tensor) -> Callable[[], object]:
    def step() -> object:
        return torch.autograd.grad(fn(x), (x, gamma), grad)

    return step


def _profile(step: Callable[[], object], top: int = 8) -> list[dict[str, Any]]:
    """Self CPU time per op of one call (torch.profiler), largest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 2)}
        for e in events[:top]
    ]


@dataclass
class _ShapeRun:
    """One input shape's measurements, per variant (keys in the variants' order)."""

    tag: str  # the shape as "NxCxHxW"
    variants: list[str]  # in _variants' order
    input_bytes: int
    seconds: dict[str, list[float]]
    ratios: dict[str, float]  # time over F.normalize's
    compile_s: float  # nan without the compiled variant
    saved: dict[str, tuple[int, int]]  # saved_bytes
    diffs: dict[str, float]  # max abs difference from l2_normalize_reference
    profile_ours: list[dict[str, Any]] | None


def _variants(layer: L2Norm, compiled: Callable[..., Tensor] | None) -> dict[str, Fn]:
    """The variants of the module docstring (``compiled`` None: without it), all with
    ``layer``'s gamma."""
    gamma = layer.weight
    fns: dict[str, Fn] = {
        "ours": layer,
        "naive": lambda t, g=gamma: t / t.norm(dim=1, keepdim=True) * g,
        "F.normalize": lambda t, g=gamma: F.normalize(t, dim=1) * g,
    }
    if compiled is not None:
        fns["compiled"] = lambda t, g=gamma: compiled(t, g)
    fns["recompute"] = lambda t, g=gamma: recompute_l2_normalize(t, g)
    return fns


def _measure_shape(
    shape: tuple[int, int, int, int], settings: Settings, compiled: Callable[..., Tensor] | None
) -> _ShapeRun:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).relu_().requires_grad_()
    grad = torch.randn(shape, generator=generator)
    layer = L2Norm(shape[1])
    gamma = layer.weight
    fns = _variants(layer, compiled)
    steps = {k: _step(f, x, gamma, grad) for k, f in fns.items()}
    compile_s = float("nan")
    if "compiled" in steps:
        t0 = time.perf_counter()
        steps["compiled"]()  # compiles (forward and backward graphs) on the first call
        compile_s = time.perf_counter() - t0
    expected = l2_normalize_reference(x.detach(), gamma.detach())
    diffs = {k: float((f(x).detach() - expected).abs().max()) for k, f in fns.items()}
    saved = {k: saved_bytes(f, x) for k, f in fns.items()}
    times = interleave(
        steps,
        min_rounds=settings.l2_rounds,
        max_rounds=settings.l2_rounds,
        budget_s=settings.budget_s,
        desc=f"l2norm {shape}",
    )
    ratios = {k: paired_ratio(times[k], times["F.normalize"]) for k in fns}
    return _ShapeRun(
        tag="x".join(map(str, shape)),
        variants=list(fns),
        input_bytes=x.nbytes,
        seconds=times,
        ratios=ratios,
        compile_s=compile_s,
        saved=saved,
        diffs=diffs,
        profile_ours=None if settings.quick else _profile(steps["ours"]),
    )


def _details(r: _ShapeRun) -> dict[str, Any]:
    return {
        "seconds": r.seconds,
        "ratio_to_F.normalize": r.ratios,
        "compile_s": r.compile_s,
        "saved_bytes": {k: v[0] for k, v in r.saved.items()},
        "saved_bytes_beyond_input": {k: v[1] for k, v in r.saved.items()},
        "input_bytes": r.input_bytes,
        "max_abs_diff_to_reference": r.diffs,
        "profile_ours": r.profile_ours,
    }


def _add_rows(section: Section, r: _ShapeRun, compiled_label: str) -> None:
    tag, times, ratios, saved = r.tag, r.seconds, r.ratios, r.saved
    names = " / ".join(r.variants)
    section.add(
        f"{tag}: ms {names}",
        " / ".join(f"{median(times[k]) * 1e3:.1f}" for k in r.variants),
        note="" if "compiled" not in r.variants else f"compile {r.compile_s:.0f} s",
    )
    section.add_goal(f"{tag}: ours / F.normalize time", ratios["ours"], "<=", 0.6)
    if "compiled" in r.variants:
        section.add_goal(
            f"{tag}: compiled / F.normalize time",
            ratios["compiled"],
            "<=",
            0.3,
            note=compiled_label,
        )
    else:
        section.add(
            f"{tag}: compiled / F.normalize time",
            "skipped: --quick (compiling takes tens of seconds)",
        )
    section.add(f"{tag}: naive / F.normalize time", ratios["naive"], "{:.3f}")
    for name in ("recompute",):
        section.add(
            f"{tag}: {name} / F.normalize time",
            ratios[name],
            "{:.3f}",
            note=f"vs ours {paired_ratio(times[name], times['ours']):.3f}; "
            f"saved / naive {saved[name][0] / saved['naive'][0]:.4f}",
        )
    mib = " / ".join(f"{saved[k][0] / 2**20:.1f}" for k in r.variants)
    section.add(f"{tag}: saved MiB {names}", mib, note=f"input {r.input_bytes / 2**20:.1f}")
    section.add_goal(
        f"{tag}: saved bytes ours / naive",
        saved["ours"][0] / saved["naive"][0],
        "<=",
        0.5,
        fmt="{:.4f}",
        note=f"beyond the input: {saved['ours'][1] / saved['naive'][1]:.4f}",
    )


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    """Section 3: each variant's time and saved bytes at each of the settings' shapes."""
    compiled, compiled_label = _compiled()
    section = Section(
        "l2norm",
        "3. L2Norm forward + backward (fp32)",
        details={"compiled": compiled_label, "shapes": {}},
    )
    for shape in settings.l2_shapes:
        measured = _measure_shape(shape, settings, compiled if settings.l2_compile else None)
        section.details["shapes"][measured.tag] = _details(measured)
        _add_rows(section, measured, compiled_label)
    return [section]
