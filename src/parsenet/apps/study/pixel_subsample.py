"""The training loss of the cached engine on every ``step``-th pixel instead of every pixel.

On the cached engine the head is tiny and the cost of an iteration is the full-resolution
map: bilinear upsampling of the scores to the input size, log-softmax over it, and their
backward. Measured on CamVid (480 x 360, batch 8, 11 classes, Lite0 head tap at stride 16,
1 thread of the contended AVX512-BF16 CPU): 3.5-5 s per iteration, of which the head itself
(L2Norm, 1x1 convs) is ~0.1 s. :class:`SubsampledScores` computes the upsampled scores
only at pixels ``step * j + first`` (rows and columns): the same values the full map holds
there (bilinear interpolation between the same cell centres, tested), ``step**2`` times
fewer of them. The labels are read at the same pixels, so the mean loss is the full
resolution loss averaged over a regular 1-in-``step**2`` sample of the pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from parsenet.layers.resample import Grid, align_to_grid

__all__ = ["SubsampledScores", "sample_pixels"]


def sample_pixels(stride: int, offset: float, step: int) -> int:
    """The first pixel ``first`` of the sample grid ``step * j + first``: the one that the
    stride-``stride`` grid, upsampled by ``stride / step``, lands on exactly."""
    if step < 1 or stride % step:
        raise ValueError(f"loss step {step} must divide the output stride {stride}")
    canvas = offset - step * (stride // step - 1) / 2
    first = canvas % step
    if not float(first).is_integer():
        raise ValueError(f"grid (stride {stride}, offset {offset}) has no whole-pixel sample "
                         f"at step {step}")
    return int(first)


class SubsampledScores(nn.Module):
    """A ``PackedHead``'s scores at pixels ``step * j + first`` of its input size."""

    def __init__(self, net: nn.Module, step: int) -> None:
        super().__init__()
        self.net, self.step = net, step
        self.first = sample_pixels(net.stride, net.offset, step)
        h, w = net.size
        self.size = (math.ceil((h - self.first) / step), math.ceil((w - self.first) / step))

    def subsample(self, labels: Tensor) -> Tensor:
        """``labels`` (N x H x W at the input size) at the sampled pixels."""
        return labels[..., self.first::self.step, self.first::self.step]

    def forward(self, packed: Tensor) -> Tensor:
        net = self.net
        taps = dict(zip(net.taps, torch.split(packed, net.sizes, dim=1), strict=True))
        return align_to_grid(net.head(taps), Grid(net.stride, net.offset),
                             Grid(self.step, float(self.first)), self.size)
