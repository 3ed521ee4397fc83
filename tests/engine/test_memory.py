import pytest
import torch
from torch import nn

from parsenet.engine.memory import FLOAT, InferenceMemory, choose_mode, is_out_of_memory


class TwoConvs(nn.Module):
    """3 -> 8 channels at full size, then 8 -> 5 at stride 2, upsampled back."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 5, 3, stride=2, padding=1)

    def forward(self, x):
        return nn.functional.interpolate(self.b(self.a(x)), size=x.shape[-2:])


def test_bytes_per_pixel_from_the_layer_sizes():
    memory = InferenceMemory.of(TwoConvs(), num_classes=5, probe=32)
    # Largest pair: conv a, 3 in + 8 out floats per pixel; then logits twice, input, argmax.
    assert memory.bytes_per_pixel == FLOAT * (3 + 8 + 2 * 5 + 3) + 8
    assert memory.whole(100, 200) == int(memory.bytes_per_pixel * 100 * 200)
    assert memory.whole(100, 200, flip=True) == memory.whole(100, 200) + FLOAT * 5 * 100 * 200


def test_auto_keeps_the_preferred_mode_while_it_fits_then_slides():
    memory = InferenceMemory(bytes_per_pixel=100.0, num_classes=10)
    budget = 100.0 * 1000 * 1000  # a 1000 x 1000 image whole
    kwargs = dict(window=256, scales=(0.5, 1.0))
    assert choose_mode("auto", 1000, 1000, memory, budget, **kwargs) == "whole"
    assert choose_mode("auto", 1001, 1000, memory, budget, **kwargs) == "slide"
    assert choose_mode("whole", 6000, 6000, memory, budget, **kwargs) == "whole"  # asked
    # multiscale needs its largest scale and two full-size logit maps
    assert choose_mode("auto", 900, 900, memory, budget, preferred="multiscale",
                       **kwargs) == "slide"
    assert choose_mode("auto", 600, 600, memory, budget, preferred="multiscale",
                       **kwargs) == "multiscale"


def test_sliding_windows_hold_a_band_not_the_image():
    memory = InferenceMemory(bytes_per_pixel=348.0, num_classes=33)
    whole, slide = memory.whole(6000, 6000), memory.slide(6000, 6000, 512)
    assert whole > 12e9 and slide < 1.3e9
    # the band of logits is K x window x W: doubling the width doubles it, not the window's
    assert memory.slide(512, 2000, 512) - memory.slide(512, 1000, 512) == pytest.approx(
        FLOAT * 33 * 512 * 1000 + (3 * FLOAT + 8) * 512 * 1000)


def test_the_sizes_that_fit():
    memory = InferenceMemory(bytes_per_pixel=100.0, num_classes=10)
    side = memory.largest_whole_side(1e8)
    assert side == 1000 and memory.whole(side, side) <= 1e8 < memory.whole(side + 1, side + 1)
    window = memory.largest_window(4000, 4000, 1e9)
    assert window % 32 == 0 and memory.slide(4000, 4000, window) <= 1e9 \
        < memory.slide(4000, 4000, window + 32)
    onnx = InferenceMemory(bytes_per_pixel=100.0, num_classes=10, overhead=1.5)
    assert onnx.largest_whole_side(1e8) < side


@pytest.mark.parametrize("error, oom", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not "
                  "enough memory: you tried to allocate 1 bytes."), True),
    (MemoryError(), True),
    (torch.OutOfMemoryError("CUDA out of memory."), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),  # not from an allocator
])
def test_what_counts_as_out_of_memory(error, oom):
    assert is_out_of_memory(error) is oom
