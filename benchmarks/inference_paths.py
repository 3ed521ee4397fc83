"""Section 5: inference paths of ParseNet (VGG-16 LargeFOV, fc7 + pool6) at 1x3xSxS.

Paths: eager fp32 NCHW (the reference), eager channels_last, torch.compile (inductor),
ONNX Runtime (``parsenet.engine.export``), and the default CPU path of ``parsenet predict``
(``make_predictor(backend="auto")``). Latency is the median over interleaved rounds of
each path's time over eager NCHW's; accuracy the max abs difference of the logits.
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import Section, Settings, interleave, median, paired_ratio, ratio_range
from parsenet.models import parsenet_vgg16

__all__ = ["run"]


def _inference(fn: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], Tensor]:
    def call() -> Tensor:
        with torch.inference_mode():
            return fn(x)

    return call


def _channels_last(model: nn.Module) -> Callable[[Tensor], Tensor]:
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return lambda x: cl(x.contiguous(memory_format=torch.channels_last))


@dataclass
class _Paths:
    """The paths to time (each one call on the benchmark's image) and what is known of
    them before the timing: their setup seconds, why any is missing, ``parsenet predict``'s
    backend."""

    calls: dict[str, Callable[[], Tensor]]
    setup_s: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    predict_backend: str | None = None


def _add_compiled(paths: _Paths, model: nn.Module, x: Tensor, compile_: bool) -> None:
    if not compile_:
        paths.skipped["torch.compile"] = "--quick (compiling the model takes about a minute)"
        return
    compiled = torch.compile(copy.deepcopy(model))
    paths.calls["torch.compile"] = _inference(compiled, x)
    t0 = time.perf_counter()
    paths.calls["torch.compile"]()
    paths.setup_s["torch.compile"] = time.perf_counter() - t0


def _add_onnx(paths: _Paths, model: nn.Module, x: Tensor, tmp: str, section: Section) -> None:
    """ONNX Runtime on our export, and ``parsenet predict``'s default path, which may be
    that same ONNX model (then it is not timed twice)."""
    if importlib.util.find_spec("onnxruntime") is None:
        paths.skipped["ONNX Runtime"] = "onnxruntime is not installed"
        return
    try:
        from parsenet.engine.backends import make_predictor
        from parsenet.engine.export import OnnxPredictor, export_onnx, record_onnx_metadata
        from parsenet.engine.onnx_cache import (
            CHECKPOINT_KEY,
            cache_path,
            file_sha256,
            record_digest,
        )
    except ImportError as e:
        paths.skipped["ONNX Runtime"] = f"parsenet.engine.export not usable ({e})"
        return
    # make_predictor keys its export cache on the checkpoint's content; a
    # stand-in file lets it reuse the export timed here instead of exporting again.
    checkpoint = Path(tmp) / "model.pt"
    checkpoint.write_bytes(b"parsenet benchmark stand-in checkpoint")
    onnx_path = cache_path(checkpoint, tmp)
    t0 = time.perf_counter()
    exporter = export_onnx(model, onnx_path)
    record_onnx_metadata(onnx_path, {CHECKPOINT_KEY: file_sha256(checkpoint)})
    record_digest(onnx_path)  # a checked entry, as make_predictor writes them
    paths.setup_s["ONNX export"] = time.perf_counter() - t0
    paths.calls["ONNX Runtime"] = _inference(OnnxPredictor(onnx_path), x)
    predictor, paths.predict_backend = make_predictor(
        model, backend="auto", checkpoint=checkpoint, cache_dir=tmp
    )
    section.details["onnx_exporter"] = exporter
    if paths.predict_backend != "onnx":
        paths.calls["predict default"] = _inference(predictor, x)


def _diffs_and_times(
    calls: dict[str, Callable[[], Tensor]], settings: Settings
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(max abs difference of each path's logits from eager NCHW's, seconds per round)."""
    expected = calls["eager NCHW"]()
    diffs = {k: float((fn() - expected).abs().max()) for k, fn in calls.items()}
    times = interleave(
        calls,
        min_rounds=settings.min_rounds,
        max_rounds=settings.min_rounds + 1,
        budget_s=settings.budget_s,
        desc="inference paths",
    )
    return diffs, times


def _add_rows(
    section: Section,
    paths: _Paths,
    times: dict[str, list[float]],
    ratios: dict[str, float],
    diffs: dict[str, float],
) -> None:
    skipped, setup_s, predict_backend = paths.skipped, paths.setup_s, paths.predict_backend
    section.add("eager NCHW forward, ms (median)", median(times["eager NCHW"]) * 1e3, "{:.0f}")
    for name in ("eager channels_last", "torch.compile", "ONNX Runtime"):
        if name in skipped:
            section.add(f"{name} / eager NCHW", f"skipped: {skipped[name]}")
            continue
        note = f"max abs diff {diffs[name]:.1e}; {ratio_range(times[name], times['eager NCHW'])}"
        if name in setup_s or name == "ONNX Runtime":
            key = "ONNX export" if name == "ONNX Runtime" else name
            note += f"; setup {setup_s[key]:.0f} s"
        section.add(f"{name} / eager NCHW", ratios[name], "{:.3f}", note=note)
    if predict_backend is None:
        section.add("predict default / eager NCHW", f"skipped: {skipped['predict default']}")
        return
    label = f"`parsenet predict` default ({predict_backend})"
    source = "ONNX Runtime" if predict_backend == "onnx" else "predict default"
    section.add_goal(
        f"{label} / eager NCHW",
        ratios["predict default"],
        "<=",
        0.7,
        note=ratio_range(times[source], times["eager NCHW"]),
    )
    section.add_goal(f"{label}: max abs diff", diffs["predict default"], "<=", 1e-4, fmt="{:.1e}")


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    """Section 5: every path's latency over eager NCHW's, and its logits' difference."""
    size = settings.infer_size
    section = Section("inference", f"5. Inference paths, ParseNet at 1x3x{size}x{size}")
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=21, width=settings.width).eval()
    x = torch.randn(1, 3, size, size)
    paths = _Paths({
        "eager NCHW": _inference(model, x),
        "eager channels_last": _inference(_channels_last(model), x),
    })
    _add_compiled(paths, model, x, settings.infer_compile)
    with tempfile.TemporaryDirectory() as tmp:  # the ONNX export lives while it is timed
        _add_onnx(paths, model, x, tmp, section)
        if paths.predict_backend is None:
            paths.skipped.setdefault("predict default", "parsenet.engine.export not usable")
        diffs, times = _diffs_and_times(paths.calls, settings)
    ratios = {k: paired_ratio(times[k], times["eager NCHW"]) for k in paths.calls}
    if paths.predict_backend == "onnx":  # predict runs the ONNX Runtime path timed above
        ratios["predict default"], diffs["predict default"] = (
            ratios["ONNX Runtime"],
            diffs["ONNX Runtime"],
        )
    section.details.update(
        {
            "seconds": times,
            "ratios": ratios,
            "max_abs_diff": diffs,
            "setup_seconds": paths.setup_s,
            "skipped": paths.skipped,
            "predict_backend": paths.predict_backend,
            "width": settings.width,
        }
    )
    _add_rows(section, paths, times, ratios, diffs)
    return [section]
