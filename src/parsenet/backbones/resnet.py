"""Dilated ResNet-50/101 (torchvision) with the same tap interface as the VGG backbone.

layer3 and layer4 trade their stride for dilation (output stride 8, as DeepLab). Taps are
named for the stage they are read after: ``layer2``, ``layer3``, ``layer4`` (the ParseNet
head pools layer4, as it pools VGG's fc7).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import resnet50, resnet101

from parsenet.backbones.weights import WeightsError, read_state_dict
from parsenet.preprocessing import IMAGENET, Preprocessing

__all__ = ["ResNetBackbone"]

TAPS = ("layer2", "layer3", "layer4")
_WIDTHS = {"layer2": 512, "layer3": 1024, "layer4": 2048}
# The tap names before issue 16 (VGG's, which these layers are not), named in the refusal.
_RENAMED = {"conv3": "layer2", "conv4": "layer3", "conv5": "layer4", "fc7": "layer4"}


class ResNetBackbone(nn.Module):
    def __init__(self, depth: int = 50, taps: Sequence[str] = ("layer4",)) -> None:
        super().__init__()
        if depth not in (50, 101):
            raise ValueError(f"depth must be 50 or 101, got {depth}")
        unknown = [t for t in taps if t not in TAPS]
        if unknown or not taps:
            renamed = ", ".join(f"{t} is {_RENAMED[t]}" for t in unknown if t in _RENAMED)
            raise ValueError(f"taps must be a non-empty subset of {TAPS}, got {tuple(taps)}"
                             + (f" (ResNet taps are named for their stage: {renamed})"
                                if renamed else ""))
        net = (resnet50 if depth == 50 else resnet101)(
            weights=None, replace_stride_with_dilation=[False, True, True]
        )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        self.depth = depth
        self.taps = tuple(taps)
        self.output_stride = 8
        self.grid_offset = 0.0  # stride-2 3x3 convs/pools with padding 1 keep cells centred
        self.out_channels = {t: _WIDTHS[t] for t in self.taps}

    def load_weights(self, weights: Any) -> Preprocessing:
        """torchvision ResNet weights (enum or state-dict path); the fc layer is ignored."""
        if isinstance(weights, (str, os.PathLike)):
            state = read_state_dict(weights)
        elif hasattr(weights, "get_state_dict"):
            state = weights.get_state_dict(progress=True)
        else:
            raise WeightsError(f"unsupported weights {weights!r}")
        ours = self.state_dict()
        mapped = {}
        for k, v in state.items():
            if k.startswith("fc."):
                continue
            key = k
            for i, name in enumerate(("conv1", "bn1")):
                if k.startswith(name + "."):
                    key = f"stem.{i}." + k[len(name) + 1:]
            mapped[key] = v
        missing = [k for k in ours if k not in mapped]
        if missing:
            raise WeightsError(f"weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        with torch.no_grad():
            self.load_state_dict(mapped, strict=False)
        return IMAGENET

    def forward(self, x: Tensor, taps: Sequence[str] | None = None) -> dict[str, Tensor]:
        taps = self.taps if taps is None else tuple(taps)
        last = max(int(t[-1]) for t in taps)
        feats: dict[str, Tensor] = {}
        x = self.layer1(self.stem(x))
        for i in (2, 3, 4):
            x = getattr(self, f"layer{i}")(x)
            feats[f"layer{i}"] = x
            if i == last:
                break
        return {t: feats[t] for t in taps}
