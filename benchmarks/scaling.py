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

__all__ = ["run", "growth_exponent"]


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


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=21, width=settings.scaling_width).eval()
    try:
        from parsenet.engine.inference import predict_logits
    except ImportError as e:
        predict_logits, slide_reason = None, f"parsenet.engine.inference not usable ({e})"
    window, stride = settings.slide_window, settings.slide_stride
    rows: list[dict[str, Any]] = []
    for size in settings.scaling_sizes:
        x = torch.randn(1, 3, size, size)
        repeats = 3 if size <= 512 else 1

        def whole(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        row: dict[str, Any] = {"size": size, "pixels": size * size}
        row["whole_s"], row["whole_bytes"], row["whole_resident"] = _measure(whole, repeats)
        if predict_logits is None:
            row["slide"] = f"skipped: {slide_reason}"
        elif size <= window:
            row["slide"] = "one window: the whole-image pass"
        else:

            def slide(x: torch.Tensor = x) -> object:
                with torch.inference_mode():
                    return predict_logits(model, x, mode="slide", window=window, stride=stride)

            row["slide_s"], row["slide_bytes"], row["slide_resident"] = _measure(slide, repeats)
        rows.append(row)

    pixels = [r["pixels"] for r in rows]
    time_exp = growth_exponent(pixels, [r["whole_s"] for r in rows])
    mem_exp = growth_exponent(pixels, [max(r["whole_bytes"], 1) for r in rows])
    bytes_per_pixel = rows[-1]["whole_bytes"] / rows[-1]["pixels"]
    avail = available_memory()
    fits_side = int(math.sqrt(avail / bytes_per_pixel)) if bytes_per_pixel and avail else 0
    slid = [r for r in rows if "slide_s" in r]
    # Slide holds one window's activations plus the K x H x W sum and the H x W count.
    slide_per_pixel = (slid[-1]["slide_bytes"] / slid[-1]["pixels"]) if slid else float("nan")
    section = Section(
        "scaling",
        f"7. Scaling: ParseNet forward (width {settings.scaling_width:g}"
        f"), whole image vs slide {window}/{stride}",
        details={
            "rows": rows,
            "width": settings.scaling_width,
            "window": window,
            "stride": stride,
            "time_exponent": time_exp,
            "memory_exponent": mem_exp,
            "bytes_per_pixel": bytes_per_pixel,
            "slide_bytes_per_pixel": slide_per_pixel,
            "available_bytes": avail,
            "whole_fits_up_to_side": fits_side,
        },
    )
    for r in rows:
        mpx = r["pixels"] / 1e6
        text = (
            f"whole {r['whole_s'] * 1e3:.0f} ms, {r['whole_bytes'] / 2**20:.0f} MiB "
            f"({r['whole_s'] / mpx:.2f} s/Mpx)"
        )
        if "slide_s" in r:
            text += (
                f"; slide {r['slide_s'] * 1e3:.0f} ms, {r['slide_bytes'] / 2**20:.0f} MiB "
                f"({r['slide_s'] / r['whole_s']:.2f}x whole time)"
            )
        else:
            text += f"; slide: {r['slide']}"
        section.add(f"{r['size']}x{r['size']}", text)
    section.add(
        "growth exponent in pixels (1 = linear): time / peak memory",
        f"{time_exp:.2f} / {mem_exp:.2f}",
    )
    section.add(
        "whole-image inference fits up to (MemAvailable / bytes per pixel)",
        f"{fits_side}x{fits_side}",
        note=f"{avail / 2**30:.1f} GiB available; whole {bytes_per_pixel:.0f} B/px, "
        f"slide {slide_per_pixel:.0f} B/px at the largest size",
    )
    return [section]
