"""How images must be prepared for a set of weights: channel order, pixel range, mean, std.

Weights carry one of these, so datasets, ``predict`` and export prepare images the way the
weights were trained: torchvision's ImageNet models take RGB in [0, 1] normalised by the
ImageNet mean/std; Caffe-trained VGG (DeepLab, ParseNet, HED) takes BGR in [0, 255] minus
the Caffe mean.

One implementation: :class:`ToModelInput`, a ``torchvision.transforms.v2`` transform. The
dataset pipelines end with it (:mod:`parsenet.data.transforms`), and calling a
:class:`Preprocessing` (as evaluate, predict and serve do) runs the same transform, so a
model sees the same numbers whichever path fed it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import torch
import torchvision.transforms.v2 as v2
from torch import Tensor
from torchvision import tv_tensors

from parsenet.errors import ConfigError

__all__ = ["Preprocessing", "ToModelInput", "IMAGENET", "CAFFE_VGG", "CAFFE_VGG16",
           "PREPROCESSINGS", "preprocessing_by_name", "preprocessing_for"]


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"  # "RGB" or "BGR": order of the channels the model expects
    pixel_max: float = 1.0  # 1.0: pixels in [0, 1]; 255.0: pixels in [0, 255]

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")

    @cached_property
    def transform(self) -> ToModelInput:
        """This preprocessing as a v2 transform (built once per instance)."""
        return ToModelInput(self)

    def __call__(self, image: Tensor) -> Tensor:
        """uint8 (or [0, 1] float) RGB image(s) ... x 3 x H x W -> normalised float32."""
        return self.transform(image)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            mean=tuple(d["mean"]), std=tuple(d["std"]),
            channel_order=d.get("channel_order", "RGB"), pixel_max=float(d.get("pixel_max", 1.0)),
        )


class ToModelInput(v2.Transform):
    """RGB image(s) ... x 3 x H x W, uint8 (or float in [0, 1]) -> the float32 input
    ``preprocessing`` describes: channel order, pixel range, mean, std. Masks pass through.

    Written as one multiply-add, ``x * (pixel_max / 255 / std) - mean / std``, rather than
    ``v2.ToDtype(scale=True)`` + ``v2.Normalize``: equal up to float rounding, but one pass
    over the image instead of three, and bit-identical to the normalisation the datasets
    have always applied, so fixed-seed training runs keep their batches.
    """

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        std = torch.tensor(preprocessing.std, dtype=torch.float32).view(3, 1, 1)
        mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(3, 1, 1)
        self.scale = preprocessing.pixel_max / 255.0 / std  # per uint8 grey level
        self.shift = -mean / std
        self.bgr = preprocessing.channel_order == "BGR"
        self.spec = preprocessing

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, tv_tensors.Image):
            return inpt  # masks (labels, validity) keep their values
        x = inpt.as_subclass(Tensor)
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise TypeError(f"expected a uint8 or float image, got {x.dtype}")
        scale = self.scale.to(x.device) * (1.0 if x.dtype == torch.uint8 else 255.0)
        if self.bgr:
            x = x.flip(-3)
        out = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        out = out.mul_(scale).add_(self.shift.to(x.device))
        return tv_tensors.Image(out) if isinstance(inpt, tv_tensors.Image) else out

    def extra_repr(self) -> str:
        return repr(self.spec)


IMAGENET = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# Mean in BGR order: FCN's data layers (voc_layers.py, pascalcontext_layers.py,
# siftflow_layers.py) and HED subtract this one (the mean of the ILSVRC mean image).
CAFFE_VGG = Preprocessing(
    mean=(104.00699, 116.66877, 122.67892), std=(1.0, 1.0, 1.0), channel_order="BGR",
    pixel_max=255.0,
)
# The original Caffe VGG_ILSVRC_16_layers (Simonyan & Zisserman's model page): BGR, 0-255,
# minus the per-channel mean (B, G, R) = (103.939, 116.779, 123.68), as TABLES.md records.
CAFFE_VGG16 = Preprocessing(
    mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), channel_order="BGR", pixel_max=255.0,
)

# Names for ``model.preprocessing`` in a config: prepare images this way whatever the
# weights file says (a Caffe-converted VGG-16 saved in torchvision's layout, for instance).
PREPROCESSINGS = {"caffe_vgg": CAFFE_VGG16, "caffe_fcn": CAFFE_VGG, "imagenet": IMAGENET}


def preprocessing_by_name(name: str) -> Preprocessing:
    """The :data:`PREPROCESSINGS` entry ``name``; a ConfigError naming the key otherwise."""
    if name not in PREPROCESSINGS:
        raise ConfigError(f"model.preprocessing must be null or one of "
                          f"{sorted(PREPROCESSINGS)}, got {name!r}")
    return PREPROCESSINGS[name]


def preprocessing_for(model: Any, given: Preprocessing | None = None) -> Preprocessing | None:
    """``given`` if not None, else the preprocessing ``model`` carries (None if it carries
    none): the one lookup evaluate and export make, so where a model's preprocessing comes
    from is decided here."""
    return given if given is not None else getattr(model, "preprocessing", None)
