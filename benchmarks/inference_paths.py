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


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    size = settings.infer_size
    section = Section("inference", f"5. Inference paths, ParseNet at 1x3x{size}x{size}")
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=21, width=settings.width).eval()
    x = torch.randn(1, 3, size, size)
    paths: dict[str, Callable[[], Tensor]] = {
        "eager NCHW": _inference(model, x),
        "eager channels_last": _inference(_channels_last(model), x),
    }
    setup_s: dict[str, float] = {}
    skipped: dict[str, str] = {}
    if settings.infer_compile:
        compiled = torch.compile(copy.deepcopy(model))
        paths["torch.compile"] = _inference(compiled, x)
        t0 = time.perf_counter()
        paths["torch.compile"]()
        setup_s["torch.compile"] = time.perf_counter() - t0
    else:
        skipped["torch.compile"] = "--quick (compiling the model takes about a minute)"

    predict_backend = None
    with tempfile.TemporaryDirectory() as tmp:
        if importlib.util.find_spec("onnxruntime") is None:
            skipped["ONNX Runtime"] = "onnxruntime is not installed"
        else:
            try:
                from parsenet.engine.backends import make_predictor
                from parsenet.engine.export import (
                    OnnxPredictor,
                    export_onnx,
                    record_onnx_metadata,
                )
                from parsenet.engine.onnx_cache import (
                    CHECKPOINT_KEY,
                    cache_path,
                    file_sha256,
                    record_digest,
                )
            except ImportError as e:
                skipped["ONNX Runtime"] = f"parsenet.engine.export not usable ({e})"
            else:
                # make_predictor keys its export cache on the checkpoint's content; a
                # stand-in file lets it reuse the export timed here instead of exporting again.
                checkpoint = Path(tmp) / "model.pt"
                checkpoint.write_bytes(b"parsenet benchmark stand-in checkpoint")
                onnx_path = cache_path(checkpoint, tmp)
                t0 = time.perf_counter()
                exporter = export_onnx(model, onnx_path)
                record_onnx_metadata(onnx_path, {CHECKPOINT_KEY: file_sha256(checkpoint)})
                record_digest(onnx_path)  # a checked entry, as make_predictor writes them
                setup_s["ONNX export"] = time.perf_counter() - t0
                paths["ONNX Runtime"] = _inference(OnnxPredictor(onnx_path), x)
                predictor, predict_backend = make_predictor(
                    model, backend="auto", checkpoint=checkpoint, cache_dir=tmp
                )
                section.details["onnx_exporter"] = exporter
                if predict_backend != "onnx":
                    paths["predict default"] = _inference(predictor, x)
        if predict_backend is None:
            skipped.setdefault("predict default", "parsenet.engine.export not usable")

        expected = paths["eager NCHW"]()
        diffs = {k: float((fn() - expected).abs().max()) for k, fn in paths.items()}
        times = interleave(
            paths,
            min_rounds=settings.min_rounds,
            max_rounds=settings.min_rounds + 1,
            budget_s=settings.budget_s,
            desc="inference paths",
        )
    ratios = {k: paired_ratio(times[k], times["eager NCHW"]) for k in paths}
    if predict_backend == "onnx":
        ratios["predict default"], diffs["predict default"] = (
            ratios["ONNX Runtime"],
            diffs["ONNX Runtime"],
        )
    section.details.update(
        {
            "seconds": times,
            "ratios": ratios,
            "max_abs_diff": diffs,
            "setup_seconds": setup_s,
            "skipped": skipped,
            "predict_backend": predict_backend,
            "width": settings.width,
        }
    )
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
    else:
        label = f"`parsenet predict` default ({predict_backend})"
        source = "ONNX Runtime" if predict_backend == "onnx" else "predict default"
        section.add_goal(
            f"{label} / eager NCHW",
            ratios["predict default"],
            "<=",
            0.7,
            note=ratio_range(times[source], times["eager NCHW"]),
        )
        section.add_goal(
            f"{label}: max abs diff", diffs["predict default"], "<=", 1e-4, fmt="{:.1e}"
        )
    return [section]
