"""Bring a coarse map back to input resolution, or onto another feature grid, pixel-aligned.

A map is "on grid (stride, offset)" when its cell (i, j) is centred on input pixel
(stride*i + offset, stride*j + offset). It is sampled at input pixel y at cell coordinate
(y - offset) / stride, bilinearly, clamped at the borders. The grids our backbones produce
map onto ``F.interpolate`` exactly: offset 0 (3x3/stride-2 pools with padding 1: DeepLab,
dilated ResNet) is ``align_corners=True`` onto stride*(h-1)+1 pixels; offset (stride-1)/2
(2x2 pools: FCN) is ``align_corners=False`` onto stride*h pixels. Neither needs the input size
to be a multiple of anything.

Any other offset that differs from (stride-1)/2 by a whole number of pixels (FCN's 100-pixel
conv1_1 padding puts fc7's cells at 32*i + 12.5) is the ``align_corners=False`` canvas
shifted by that many pixels: FCN's Crop layer (offset 19 after its 64/32 bilinear
Deconvolution, which is this canvas shifted by 16) computes the same crop. Interior pixels are
identical to the Deconvolution's; within half a cell of the border the Deconvolution fades
towards zero (its kernel has no neighbour there) where we clamp, which scales every class
score of the pixel by the same positive factor, so the predicted class is the same.

TF-"SAME" strided convs (EfficientNet-Lite) put cells at a whole offset, stride - 1: the
same shifted canvas.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_to_input", "resize_to_pixels", "Grid", "align_to_grid", "shift_crop"]


class Grid(NamedTuple):
    """Cell i of a map is centred on input pixel ``stride * i + offset``."""

    stride: int
    offset: float


def _whole(value: float, what: str) -> int:
    if value != int(value):
        raise ValueError(f"{what}: the grids are {value} cells apart, not a whole number")
    return int(value)


def shift_crop(x: Tensor, start: int, size: tuple[int, int]) -> Tensor:
    """``x[..., start:start+H, start:start+W]``; cells outside ``x`` repeat its border."""
    H, W = size[0], size[1]
    h, w = x.shape[-2:]
    before = max(0, -start)
    after_h, after_w = max(0, start + H - h), max(0, start + W - w)
    if before or after_h or after_w:
        x = F.pad(x, (before, after_w, before, after_h), mode="replicate")
        start += before
    return x[..., start:start + H, start:start + W]


def align_to_grid(x: Tensor, src: Grid, dst: Grid, size: tuple[int, int]) -> Tensor:
    """Resample ``x`` (on ``src``) onto ``dst`` with ``size`` cells; ``dst.stride`` must
    divide ``src.stride`` (bilinear upsampling, clamped) or equal it (a pure shift).

    Upsampling by r = src/dst with ``align_corners=False`` gives a canvas on grid
    (dst.stride, src.offset - dst.stride*(r-1)/2); the result is that canvas shifted by the
    whole number of cells between it and ``dst``.
    """
    if src.stride % dst.stride:
        raise ValueError(f"cannot upsample stride {src.stride} onto stride {dst.stride}")
    r = src.stride // dst.stride
    if r > 1:
        h, w = x.shape[-2:]
        x = F.interpolate(x, size=(r * h, r * w), mode="bilinear", align_corners=False)
    canvas_offset = src.offset - dst.stride * (r - 1) / 2
    start = _whole((dst.offset - canvas_offset) / dst.stride, f"grid {src} -> {dst}")
    return shift_crop(x, start, size)


def resize_to_input(x: Tensor, size: tuple[int, int], stride: int, offset: float) -> Tensor:
    """Resample ``x`` (N x C x h x w on a stride/offset grid) to ``size`` = (H, W)."""
    H, W = size[0], size[1]
    if stride == 1 and offset == 0:
        return x
    if offset == 0:
        # One replicated cell past the end covers pixels after the last centre.
        x = F.pad(x, (0, 1, 0, 1), mode="replicate")
        h, w = x.shape[-2:]
        x = F.interpolate(
            x, size=(stride * (h - 1) + 1, stride * (w - 1) + 1), mode="bilinear",
            align_corners=True,
        )
    elif offset == (stride - 1) / 2:
        h, w = x.shape[-2:]
        x = F.interpolate(x, size=(stride * h, stride * w), mode="bilinear", align_corners=False)
    elif float(offset).is_integer() and 0 < offset < stride:
        # TF-"SAME" strided convs (EfficientNet-Lite): cells at stride*i + offset, a whole
        # offset. Padded cell q = i + 1 lands on pixel stride*q; cell i belongs at
        # stride*i + offset, so the offset-0 canvas is shifted by stride - offset pixels.
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        h, w = x.shape[-2:]
        x = F.interpolate(
            x, size=(stride * (h - 1) + 1, stride * (w - 1) + 1), mode="bilinear",
            align_corners=True,
        )
        # One crop for the shift and the size: exported, two would be two copies of the
        # full-resolution logits.
        start = stride - int(offset)
        _check_covers(x, (H + start, W + start), (H, W), stride)
        return x[..., start:start + H, start:start + W]
    else:  # e.g. FCN's conv1_1 pad 100: the crop of FCN's Crop layer (module docstring)
        return align_to_grid(x, Grid(stride, offset), Grid(1, 0.0), (H, W))
    _check_covers(x, (H, W), (H, W), stride)
    return x[..., :H, :W]


def _check_covers(x: Tensor, needed: tuple[int, int], size: tuple[int, int],
                  stride: int) -> None:
    """``x``, upsampled, has the ``needed`` pixels for an input of ``size``."""
    if x.shape[-2] < needed[0] or x.shape[-1] < needed[1]:
        raise ValueError(
            f"feature map {tuple(x.shape[-2:])} too small for input {size} at stride {stride}"
        )


def resize_to_pixels(x: Tensor, size: tuple[int, int], stride: int, offset: float,
                     pixels: tuple[int, int]) -> Tensor:
    """``resize_to_input(x, size, stride, offset)[..., first::step, first::step]`` for
    ``pixels`` = (first, step), computed at those pixels only: they form the grid
    (step, first), which :func:`align_to_grid` reaches by upsampling ``stride / step``
    times instead of ``stride`` times (the same clamped bilinear samples)."""
    first, step = pixels
    rows, cols = len(range(first, size[0], step)), len(range(first, size[1], step))
    return align_to_grid(x, Grid(stride, offset), Grid(step, float(first)), (rows, cols))
