"""Section 7: how forward time and peak memory grow with the image, whole vs sliding window.

ParseNet (VGG-16 LargeFOV, fc7 + pool6) at S x S for each S of the settings, inference
mode. ``whole`` is one pass over the image; ``slide`` is
``parsenet.engine.inference.predict_logits(mode="slide")`` with the window and stride of the
settings (images no larger than the window are one window: the same pass as whole).
Peak memory is the resident-set high-water mark above the resident set at the start.
Growth is summarised by the exponent of a least-squares fit of log(value) on log(pixels):
1.0 is linear in pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import PeakMemory, Section, Settings, available_memory, median
from parsenet.models import parsenet_vgg16

__all__ = ["run", "growth_exponent", "memory_line"]


def growth_exponent(pixels: list[int], values: list[float]) -> float:
    """Slope of log(values) against log(pixels) (least squares)."""
    xs, ys = [math.log(p) for p in pixels], [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return (
        sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else float("nan")
    )


def _measure(call: Callable[[], object], repeats: int) -> tuple[float, int, int]:
    """(median seconds, peak allocated bytes, peak resident growth) over ``repeats`` calls
    after a warm-up (none for a single call: at large sizes one pass dwarfs the first-call
    setup). Memory is read on the last call; the profiler that counts allocations costs
    microseconds per op, nothing next to a convolution."""
    if repeats > 1:
        call()
    times: list[float] = []
    memory = PeakMemory()
    for i in range(repeats):
        last = i == repeats - 1
        if last:
            memory.__enter__()
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if last:
            memory.__exit__(None, None, None)
    return median(times), memory.allocated, memory.resident


def _sweep(
    model: torch.nn.Module, sizes: tuple[int, ...], slide_with: Any, window: int, stride: int
) -> list[dict[str, Any]]:
    """Whole (and, with ``slide_with`` = predict_logits, slide) time and memory per size."""
    rows: list[dict[str, Any]] = []
    for size in sizes:
        x = torch.randn(1, 3, size, size)
        repeats = 3 if size <= 512 else 1

        def whole(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        row: dict[str, Any] = {"size": size, "pixels": size * size}
        row["whole_s"], row["whole_bytes"], row["whole_resident"] = _measure(whole, repeats)
        if slide_with is not None and size > window:

            def slide(x: torch.Tensor = x) -> object:
                with torch.inference_mode():
                    return slide_with(model, x, mode="slide", window=window, stride=stride)

            row["slide_s"], row["slide_bytes"], row["slide_resident"] = _measure(slide, repeats)
        rows.append(row)
    return rows


def memory_line(rows: list[dict[str, Any]], key: str = "whole_bytes") -> tuple[float, float]:
    """(fixed bytes, bytes per pixel) of the line through the two largest sizes' peaks.

    The fixed part (oneDNN's reordered weights, buffers that do not scale) dominates at
    small sizes, so a plain peak / pixels would overstate the cost of a pixel there.
    """
    rows = [r for r in rows if key in r]
    if len(rows) < 2:
        return 0.0, (rows[-1][key] / rows[-1]["pixels"]) if rows else float("nan")
    a, b = rows[-2], rows[-1]
    per_pixel = (b[key] - a[key]) / (b["pixels"] - a["pixels"])
    return b[key] - per_pixel * b["pixels"], per_pixel


def _fits(line: tuple[float, float], avail: int) -> int:
    """Side of the largest square image whose peak (on ``line``) fits in ``avail`` bytes."""
    fixed, per_pixel = line
    if not per_pixel > 0 or avail <= fixed:
        return 0
    return int(math.sqrt((avail - fixed) / per_pixel))


def _slide_function() -> tuple[Callable[..., Any] | None, str]:
    """(``predict_logits``, the note of a size no larger than the window), or (None, why):
    without the engine the section still times whole images."""
    try:
        from parsenet.engine.inference import predict_logits
    except ImportError as e:
        return None, f"skipped: parsenet.engine.inference ({e})"
    return predict_logits, "one window: the whole-image pass"


def _section(
    settings: Settings, rows: list[dict[str, Any]], real_rows: list[dict[str, Any]]
) -> Section:
    """The section with the sweeps and what they imply in its details; no rows yet."""
    pixels = [r["pixels"] for r in rows]
    time_exp = growth_exponent(pixels, [r["whole_s"] for r in rows])
    mem_exp = growth_exponent(pixels, [max(r["whole_bytes"], 1) for r in rows])
    avail = available_memory()
    whole_line = memory_line(rows)
    slide_line = memory_line(rows, "slide_bytes")
    real_line = memory_line(real_rows) if real_rows else (float("nan"), float("nan"))
    window, stride = settings.slide_window, settings.slide_stride
    return Section(
        "scaling",
        f"7. Scaling: ParseNet forward (width {settings.scaling_width:g}"
        f"), whole image vs slide {window}/{stride}",
        details={
            "rows": rows,
            "real_model_rows": real_rows,
            "width": settings.scaling_width,
            "window": window,
            "stride": stride,
            "time_exponent": time_exp,
            "memory_exponent": mem_exp,
            "whole_memory_fixed_and_per_pixel": whole_line,
            "slide_memory_fixed_and_per_pixel": slide_line,
            "real_model_memory_fixed_and_per_pixel": real_line,
            "available_bytes": avail,
            "whole_fits_up_to_side": _fits(whole_line, avail),
            "real_model_whole_fits_up_to_side": _fits(real_line, avail),
        },
    )


def _size_text(r: dict[str, Any], slide_reason: str) -> str:
    """One size's whole-image time and peak, and its slide's (or why there is none)."""
    mpx = r["pixels"] / 1e6
    text = (
        f"whole {r['whole_s'] * 1e3:.0f} ms, {r['whole_bytes'] / 2**20:.0f} MiB "
        f"({r['whole_s'] / mpx:.2f} s/Mpx)"
    )
    if "slide_s" in r:
        return text + (
            f"; slide {r['slide_s'] * 1e3:.0f} ms, {r['slide_bytes'] / 2**20:.0f} MiB "
            f"({r['slide_s'] / r['whole_s']:.2f}x whole time)"
        )
    return text + f"; slide: {slide_reason}"


def _add_reduced_width_rows(section: Section, slide_reason: str) -> None:
    d = section.details
    for r in d["rows"]:
        section.add(f"{r['size']}x{r['size']}", _size_text(r, slide_reason))
    section.add(
        "growth exponent in pixels (1 = linear): time / peak memory",
        f"{d['time_exponent']:.2f} / {d['memory_exponent']:.2f}",
    )
    fits = d["whole_fits_up_to_side"]
    whole_line = d["whole_memory_fixed_and_per_pixel"]
    slide_line = d["slide_memory_fixed_and_per_pixel"]
    section.add(
        f"whole-image inference fits up to (width {d['width']:g})",
        f"{fits}x{fits}",
        note=f"MemAvailable {d['available_bytes'] / 2**30:.1f} GiB; peak ~ "
        f"{whole_line[0] / 2**20:.0f} MiB + {whole_line[1]:.0f} B/px; "
        f"slide ~ {slide_line[1]:.0f} B/px",
    )


def _add_full_width_rows(section: Section) -> None:
    d = section.details
    real_rows = d["real_model_rows"]
    for r in real_rows:
        section.add(
            f"full-width ParseNet at {r['size']}x{r['size']}",
            f"whole {r['whole_s'] * 1e3:.0f} ms, {r['whole_bytes'] / 2**20:.0f} MiB",
        )
    if real_rows:
        fits = d["real_model_whole_fits_up_to_side"]
        real_line = d["real_model_memory_fixed_and_per_pixel"]
        section.add(
            "whole-image inference fits up to (full width)",
            f"{fits}x{fits}" if len(real_rows) > 1 else "n/a (needs two sizes)",
            note=f"peak ~ {real_line[0] / 2**20:.0f} MiB + {real_line[1]:.0f} B/px",
        )


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    """Section 7: the reduced-width sweep (whole and slide), then the full-width one."""
    torch.manual_seed(0)
    predict_logits, slide_reason = _slide_function()
    window, stride = settings.slide_window, settings.slide_stride
    model = parsenet_vgg16(num_classes=21, width=settings.scaling_width).eval()
    rows = _sweep(model, settings.scaling_sizes, predict_logits, window, stride)
    real_rows: list[dict[str, Any]] = []
    if settings.scaling_real_sizes:
        real = parsenet_vgg16(num_classes=21).eval()
        real_rows = _sweep(real, settings.scaling_real_sizes, None, window, stride)
    section = _section(settings, rows, real_rows)
    _add_reduced_width_rows(section, slide_reason)
    _add_full_width_rows(section)
    return [section]
