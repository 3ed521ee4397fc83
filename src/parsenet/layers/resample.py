"""Bring a coarse map back to input resolution, pixel-aligned.

A backbone whose feature (i, j) is centred on input pixel (stride*i + offset, stride*j + offset)
is sampled at input pixel y at feature coordinate (y - offset) / stride, bilinearly, clamped
at the borders. The two grids our backbones produce map onto ``F.interpolate`` exactly:
offset 0 (3x3/stride-2 pools with padding 1: DeepLab, dilated ResNet) is ``align_corners=True``
onto stride*(h-1)+1 pixels; offset (stride-1)/2 (2x2 pools: FCN) is ``align_corners=False``
onto stride*h pixels. Any other whole offset (TF-"SAME" strided convs: EfficientNet-Lite's
stride - 1) is the offset-0 resampling of the map with one replicated cell before it, shifted
by stride - offset pixels. None needs the input size to be a multiple of anything.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_to_input"]


def resize_to_input(x: Tensor, size: tuple[int, int], stride: int, offset: float) -> Tensor:
    """Resample ``x`` (N x C x h x w on a stride/offset grid) to ``size`` = (H, W)."""
    H, W = size[0], size[1]
    if stride == 1:
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
        # Padded cell q = i + 1 lands on pixel stride*q; cell i belongs at stride*i + offset.
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        h, w = x.shape[-2:]
        x = F.interpolate(
            x, size=(stride * (h - 1) + 1, stride * (w - 1) + 1), mode="bilinear",
            align_corners=True,
        )
        start = stride - int(offset)
        x = x[..., start:, start:]
    else:
        raise ValueError(f"unsupported grid offset {offset} for stride {stride}")
    if x.shape[-2] < H or x.shape[-1] < W:
        raise ValueError(
            f"feature map {tuple(x.shape[-2:])} too small for input {(H, W)} at stride {stride}"
        )
    return x[..., :H, :W]
