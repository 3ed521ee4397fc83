"""Weights as typed data: where the tensors come from, how images must be prepared for them,
what they are (``meta``) and which stages of a model they fill.

The pattern is torchvision's ``models/_api.py``: a frozen :class:`Weights` entry per file and
a :class:`WeightsEnum` per backbone whose members are the known entries
(:class:`parsenet.backbones.weights.VGG16Weights`, ``EfficientNetLite0Weights``,
``ResNet50Weights``, :class:`parsenet.models.released.ReleasedWeights`). A builder's
``weights=`` takes an entry, a member's name (``"hed"``, ``"imagenet"``) or a path;
``Enum.verify`` turns any of them into the entry, without reading a file.

Two kinds of entry, told apart by type: a :class:`Weights` fills the named stages of a
backbone (``fills``: the pretrained parameter group, and nothing in a config names a module
path); a :class:`ModelWeights` fills every parameter of a whole model (a released model, a
checkpoint's state) and is loaded strictly.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from parsenet.errors import WeightsError
from parsenet.preprocessing import Preprocessing

__all__ = ["WeightsSource", "LocalFile", "UrlFile", "InMemory", "Weights", "ModelWeights",
           "WeightsEnum", "read_state_dict"]


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a state dict safely: safetensors, or ``torch.load(weights_only=True)``."""
    from parsenet.safe_load import load_weights_only

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # truncated or corrupt
            raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    obj = load_weights_only(path, WeightsError, "weights file of tensors")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return obj


class WeightsSource(ABC):
    """Where an entry's tensors come from; ``read()`` returns them as a state dict."""

    @abstractmethod
    def read(self) -> dict[str, Tensor]:
        """The tensors (reading, downloading or unpacking as the source needs)."""


@dataclass(frozen=True)
class LocalFile(WeightsSource):
    """A state dict on disk: ``.safetensors``, or ``.pth``/``.pt`` read with weights_only."""

    path: Path

    def read(self) -> dict[str, Tensor]:
        return read_state_dict(self.path)


@dataclass(frozen=True)
class UrlFile(WeightsSource):
    """A file torch.hub downloads into its cache (torchvision's weights files)."""

    url: str

    def read(self) -> dict[str, Tensor]:
        from torch.hub import load_state_dict_from_url

        try:
            return load_state_dict_from_url(self.url, map_location="cpu", progress=True,
                                            weights_only=True, check_hash=True)
        except OSError as e:  # URLError is one: no network, or the host refused
            raise WeightsError(f"cannot download {self.url} ({e}); download it where the "
                               "network is reachable and pass its path as weights") from None


@dataclass(frozen=True, eq=False)
class InMemory(WeightsSource):
    """Tensors already in memory (a checkpoint's ``model`` state)."""

    state: Mapping[str, Tensor]
    origin: str = "memory"  # names the tensors' file in messages

    def read(self) -> dict[str, Tensor]:
        return dict(self.state)


@dataclass(frozen=True)
class Weights:
    """One set of weights for a backbone.

    Attributes:
        source: where the tensors come from.
        preprocessing: how images must be prepared for them.
        architecture: the backbone they fit (``"vgg16"``, ``"resnet50"``, ...).
        fills: the backbone stages they fill; these parameters are the "pretrained" group
            of the optimizer, every other parameter is new.
        meta: what they are: the data they were trained on, classes, metrics, recipe.
    """

    source: WeightsSource
    preprocessing: Preprocessing
    architecture: str
    fills: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def get_state_dict(self) -> dict[str, Tensor]:
        return self.source.read()


@dataclass(frozen=True)
class ModelWeights(Weights):
    """Weights of a whole model, loaded strictly: every parameter is pretrained."""

    architecture: str = "model"


class WeightsEnum(Enum):
    """Base of the per-backbone enums; members' values are :class:`Weights` entries.

    Subclasses implement :meth:`load_backbone` (copy an entry into the backbone) and
    :meth:`path_entry` (the entry of a user's file), and may override
    :meth:`untrained_preprocessing`.
    """

    @classmethod
    def untrained_preprocessing(cls) -> Preprocessing:
        """What a model built without weights is fed (any fixed choice; ImageNet's)."""
        from parsenet.preprocessing import IMAGENET

        return IMAGENET

    @classmethod
    def path_entry(cls, path: Path) -> Weights:
        raise WeightsError(f"{path}: {cls.__name__} takes no weights file")

    @classmethod
    def load_backbone(cls, backbone: nn.Module, weights: Weights) -> None:
        raise NotImplementedError

    @classmethod
    def verify(cls, obj: Any) -> Weights | None:
        """The entry ``obj`` names: None, an entry, a member, a member's name or a path."""
        if obj is None or isinstance(obj, ModelWeights):
            return obj
        if isinstance(obj, cls):
            return obj.value
        if isinstance(obj, Weights):
            architectures = {m.value.architecture for m in cls}
            if obj.architecture not in architectures:
                raise WeightsError(f"weights for {obj.architecture} do not fit this model "
                                   f"({cls.__name__}: {', '.join(sorted(architectures))})")
            return obj
        if isinstance(obj, str):
            name = obj.removeprefix(f"{cls.__name__}.").upper()
            if name in cls.__members__:
                return cls[name].value
        if isinstance(obj, (str, os.PathLike)):
            path = Path(obj)
            if not path.suffix and not path.exists() and len(path.parts) == 1:
                raise WeightsError(f"weights {str(obj)!r}: no such {cls.__name__} name "
                                   f"({', '.join(m.name.lower() for m in cls)}) and no such "
                                   "file")
            return cls.path_entry(path)
        raise WeightsError(f"weights {obj!r}: expected a {cls.__name__} member, its name or "
                           "a path")

    @classmethod
    def preprocessing_of(cls, weights: Weights | None) -> Preprocessing:
        return cls.untrained_preprocessing() if weights is None else weights.preprocessing

    @classmethod
    def load(cls, model: nn.Module, weights: Weights | None) -> None:
        """Copy ``weights`` into ``model`` (a whole-model entry) or its ``backbone``."""
        if weights is None:
            return
        if isinstance(weights, ModelWeights):
            model.load_state_dict(weights.get_state_dict(), strict=True)
            return
        try:
            cls.load_backbone(model.backbone, weights)
        except WeightsError as e:  # "does not fit": say which of the user's files
            path = getattr(weights.source, "path", None)
            if path is None or str(path) in str(e):
                raise
            raise WeightsError(f"{path}: cannot load as {cls.__name__} weights: {e}"
                               ) from None
