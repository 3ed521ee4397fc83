"""How images must be prepared for a set of weights: channel order, pixel range, mean, std.

Weights carry one of these, so datasets, ``predict`` and export prepare images the way the
weights were trained: torchvision's ImageNet models take RGB in [0, 1] normalised by the
ImageNet mean/std; Caffe-trained VGG (DeepLab, ParseNet, HED) takes BGR in [0, 255] minus
the Caffe mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from parsenet.errors import ConfigError

__all__ = ["Preprocessing", "IMAGENET", "CAFFE_VGG", "CAFFE_VGG16", "PREPROCESSINGS",
           "preprocessing_by_name"]


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"  # "RGB" or "BGR": order of the channels the model expects
    pixel_max: float = 1.0  # 1.0: pixels in [0, 1]; 255.0: pixels in [0, 255]

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")

    def __call__(self, image: Tensor) -> Tensor:
        """uint8 (or [0, 1] float) RGB image(s) ... x 3 x H x W -> normalised float tensor."""
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if self.channel_order == "BGR":
            x = x.flip(-3)
        x = x * self.pixel_max
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            mean=tuple(d["mean"]), std=tuple(d["std"]),
            channel_order=d.get("channel_order", "RGB"), pixel_max=float(d.get("pixel_max", 1.0)),
        )


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
