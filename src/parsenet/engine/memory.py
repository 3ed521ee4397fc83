"""How much memory inference needs, and whether an image goes whole or in sliding windows.

A fully convolutional model's activations grow with the pixel count, so the peak of a
whole-image forward is ``bytes_per_pixel * H * W``. ``bytes_per_pixel`` is read off the
model itself: one probe forward at a small size records every layer's input and output
sizes (channel counts at their strides); the largest input + output pair per input pixel,
plus the full-size K-class logits twice (the upsampled output and the contiguous copy the
channels_last predictor returns), the normalised input and the int64 argmax, is the peak.

Checked by hand (``/usr/bin/time -v parsenet predict --mode whole --backend eager``, the
configs/cpu/siftflow.yaml model, 33 classes, 1 thread, AVX512 CPU, fp32): peak RSS minus
that of a 100 x 100 image was 275 B/pixel at 1500 x 1500 and 258 B/pixel at 3000 x 3000;
the estimate is 348 B/pixel, on the safe side. Sliding windows need the estimate at the
window's size, plus the normalised image, the labels and a band of ``K x window x W``
logits (see :func:`parsenet.engine.inference.predict_labels`).

The estimate decides, per image, whole or slide (``mode="auto"``), and turns an
out-of-memory failure into one line that names the size that would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["InferenceMemory", "choose_mode", "is_out_of_memory", "DEFAULT_BUDGET_GB",
           "ONNX_OVERHEAD"]

DEFAULT_BUDGET_GB = 2.0
FLOAT = 4  # bytes: inference runs in float32
# ONNX Runtime plans its own buffers: 5.2 GB against eager's 3.5 GB on one 3000 x 3000
# image, measured.
ONNX_OVERHEAD = 1.5


def _numel(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_numel(v) for v in value)
    if isinstance(value, dict):
        return sum(_numel(v) for v in value.values())
    return 0


@dataclass(frozen=True)
class InferenceMemory:
    """Peak-memory model of one predictor. ``bytes_per_pixel``: whole-image forward peak per
    input pixel; ``overhead``: runtime factor (:data:`ONNX_OVERHEAD` for ONNX Runtime)."""

    bytes_per_pixel: float
    num_classes: int
    overhead: float = 1.0

    @classmethod
    def of(cls, model: nn.Module, num_classes: int, *, overhead: float = 1.0,
           probe: int = 96) -> InferenceMemory:
        """Measure ``bytes_per_pixel`` with one ``probe`` x ``probe`` forward of ``model``."""
        peak = 0
        def record(module: nn.Module, inputs: tuple, output: object) -> None:
            nonlocal peak
            peak = max(peak, _numel(inputs) + _numel(output))

        leaves = [m for m in model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(record) for m in leaves]
        was_training = model.training
        try:
            model.eval()
            device = next(model.parameters()).device
            with torch.inference_mode():
                model(torch.zeros(1, 3, probe, probe, device=device))
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
        per_pixel = FLOAT * (peak / probe ** 2 + 2 * num_classes + 3) + 8
        return cls(per_pixel, num_classes, overhead)

    def whole(self, height: int, width: int, flip: bool = False) -> int:
        """Bytes to predict an image whole (with ``flip``, a second logits map)."""
        pixels = height * width
        extra = FLOAT * self.num_classes * pixels if flip else 0
        return int(self.overhead * self.bytes_per_pixel * pixels + extra)

    def multiscale(self, height: int, width: int, scales: tuple[float, ...],
                   flip: bool = False) -> int:
        """Bytes for the multi-scale mode: the largest scale whole, plus the running sum and
        the resized logits at full size."""
        largest = max(self.whole(max(1, round(height * s)), max(1, round(width * s)), flip)
                      for s in scales)
        return largest + 2 * FLOAT * self.num_classes * height * width

    def estimate(self, mode: str, height: int, width: int, *, window: int,
                 scales: tuple[float, ...], flip: bool = False) -> int:
        """Bytes of ``mode`` (whole | slide | multiscale) on an image of this size."""
        if mode == "slide":
            return self.slide(height, width, window, flip)
        if mode == "multiscale":
            return self.multiscale(height, width, scales, flip)
        return self.whole(height, width, flip)

    def slide(self, height: int, width: int, window: int, flip: bool = False) -> int:
        """Bytes to predict it in ``window`` x ``window`` tiles, labels streamed by bands."""
        wh, ww = min(window, height), min(window, width)
        band = FLOAT * self.num_classes * wh * width * (2 if flip else 1)
        return int(self.overhead * self.bytes_per_pixel * wh * ww + band
                   + (FLOAT * 3 + 8) * height * width)

    def largest_whole_side(self, budget: float) -> int:
        """Side of the largest square image that fits whole in ``budget`` bytes."""
        per_pixel = self.overhead * self.bytes_per_pixel
        return max(0, math.isqrt(int(budget / per_pixel)))

    def largest_window(self, height: int, width: int, budget: float, flip: bool = False
                       ) -> int:
        """The largest sliding window (multiple of 32) that fits in ``budget`` bytes."""
        window = 32
        while window < max(height, width) and self.slide(height, width, window + 32,
                                                         flip) <= budget:
            window += 32
        return window


def choose_mode(requested: str, height: int, width: int, memory: InferenceMemory,
                budget: float, *, window: int, scales: tuple[float, ...] = (1.0,),
                flip: bool = False, preferred: str = "whole") -> str:
    """``requested`` unless it is ``"auto"``: then ``preferred`` (the config's eval mode;
    whole is the paper's protocol) if its estimate fits in ``budget`` bytes, else
    ``"slide"``."""
    if requested != "auto":
        return requested
    need = memory.estimate(preferred, height, width, window=window, scales=scales, flip=flip)
    return preferred if need <= budget else "slide"


# How the allocators say it: torch's CPU allocator, CUDA, ONNX Runtime's arena.
_OOM_TEXT = ("DefaultCPUAllocator: not enough memory", "DefaultCPUAllocator: can't allocate",
             "CUDA out of memory", "Failed to allocate memory", "bad_alloc",
             "out of memory")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation failure (of torch, numpy or ONNX Runtime)."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    from_runtime = isinstance(e, RuntimeError) or type(e).__module__.startswith("onnxruntime")
    return from_runtime and any(t in str(e) for t in _OOM_TEXT)
