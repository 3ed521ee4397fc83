"""DeepLab-LargeFOV written the way one would by hand: a single ``nn.Sequential``.

The yardstick of section 1: our model, with its named taps, configs and fusion head, must
cost no more than this. Same layers as :class:`parsenet.backbones.VGGBackbone` ("largefov")
plus a 1x1 classifier and a bilinear x8 upsampling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["plain_largefov", "copy_weights_from", "pre_upsample_difference"]

_STAGES = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def plain_largefov(
    num_classes: int = 21, dropout: float = 0.5, width: float = 1.0
) -> nn.Sequential:
    """``width`` scales every layer's channels, as VGGBackbone's does (for --quick)."""

    def scaled(channels: int) -> int:
        return max(1, int(round(channels * width)))

    layers: list[nn.Module] = []
    in_ch = 3
    for i, (n_convs, full) in enumerate(_STAGES):
        ch = scaled(full)
        dilation = 2 if i == 4 else 1
        for _ in range(n_convs):
            layers += [
                nn.Conv2d(in_ch, ch, 3, padding=dilation, dilation=dilation),
                nn.ReLU(inplace=True),
            ]
            in_ch = ch
        layers.append(nn.MaxPool2d(3, 2 if i < 3 else 1, padding=1))
    fc = scaled(1024)
    layers += [
        nn.Conv2d(in_ch, fc, 3, padding=12, dilation=12),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Conv2d(fc, fc, 1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Conv2d(fc, num_classes, 1),
        nn.Upsample(scale_factor=8, mode="bilinear", align_corners=False),
    ]
    return nn.Sequential(*layers)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def copy_weights_from(plain: nn.Sequential, ours: nn.Module) -> None:
    """Give ``plain`` the weights of our baseline model (same convolutions, same order)."""
    src, dst = _convs(ours), _convs(plain)
    if [tuple(c.weight.shape) for c in src] != [tuple(c.weight.shape) for c in dst]:
        raise ValueError("the plain LargeFOV and our baseline have different convolutions")
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.weight.copy_(s.weight)
            d.bias.copy_(s.bias)


def pre_upsample_difference(plain: nn.Sequential, ours: nn.Module, x: Tensor) -> float:
    """Max abs difference of the class scores before upsampling: proof that both are the
    same network (``ours`` is a ParseNet without context and normalisation)."""
    plain.eval()
    ours.eval()
    with torch.inference_mode():
        a = plain[:-1](x)
        local, context = ours.forward_branches(x)
        b = ours.head(local, context)
    return float((a - b).abs().max())
