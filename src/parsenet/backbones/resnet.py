"""Dilated ResNet-50/101 (torchvision) with the same tap interface as the VGG backbone.

layer3 and layer4 trade their stride for dilation (output stride 8, as DeepLab). Taps are
named for the stage they are read after: ``layer2``, ``layer3``, ``layer4`` (the ParseNet
head pools layer4, as it pools VGG's fc7).

Weights: :class:`ResNet50Weights` / :class:`ResNet101Weights` (torchvision's files, fills the
stem and layer1-layer4), a torchvision ``ResNet*_Weights`` member, or a path to a
torchvision-layout state dict. The fc layer is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.models
from torch import Tensor, nn
from torchvision.models import resnet50, resnet101

from parsenet.errors import WeightsError
from parsenet.preprocessing import IMAGENET
from parsenet.weights_api import LocalFile, UrlFile, Weights, WeightsEnum

__all__ = ["ResNetBackbone", "ResNet50Weights", "ResNet101Weights"]

TAPS = ("layer2", "layer3", "layer4")
_WIDTHS = {"layer2": 512, "layer3": 1024, "layer4": 2048}
# VGG's tap names, which these layers are not: a config that uses them is refused with the
# layer name it means.
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

    def named_stages(self) -> dict[str, nn.Module]:
        """Stage name -> module (``stem``, ``layer1`` ... ``layer4``), for weights' ``fills``
        and ``model.freeze``."""
        return {"stem": self.stem, "layer1": self.layer1, "layer2": self.layer2,
                "layer3": self.layer3, "layer4": self.layer4}

    def load_weights(self, weights: Weights) -> None:
        """Copy a torchvision-layout ResNet state dict in; every trunk tensor must be there."""
        state = weights.get_state_dict()
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

RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _entry(tv: torchvision.models.WeightsEnum, architecture: str) -> Weights:
    return Weights(UrlFile(tv.url), IMAGENET, architecture, fills=RESNET_STAGES,
                   meta={**tv.meta, "source": f"torchvision {tv}"})


class _ResNetWeights(WeightsEnum):
    @classmethod
    def verify(cls, obj: Any) -> Weights | None:
        if isinstance(obj, torchvision.models.WeightsEnum):  # torchvision's own member
            return _entry(obj, next(iter(cls)).value.architecture)
        return super().verify(obj)

    @classmethod
    def path_entry(cls, path: Path) -> Weights:
        return Weights(LocalFile(path), IMAGENET, next(iter(cls)).value.architecture,
                       fills=RESNET_STAGES, meta={"source": str(path)})

    @classmethod
    def load_backbone(cls, backbone: nn.Module, weights: Weights) -> None:
        backbone.load_weights(weights)


class ResNet50Weights(_ResNetWeights):
    IMAGENET1K_V1 = _entry(torchvision.models.ResNet50_Weights.IMAGENET1K_V1, "resnet50")
    IMAGENET1K_V2 = _entry(torchvision.models.ResNet50_Weights.IMAGENET1K_V2, "resnet50")


class ResNet101Weights(_ResNetWeights):
    IMAGENET1K_V1 = _entry(torchvision.models.ResNet101_Weights.IMAGENET1K_V1, "resnet101")
    IMAGENET1K_V2 = _entry(torchvision.models.ResNet101_Weights.IMAGENET1K_V2, "resnet101")
