"""Joint image + label transforms on torchvision.transforms.v2.

Training: (optional :class:`Warp` to one size) -> (optional colour jitter) ->
:class:`RandomScale` -> :class:`PadToSize` -> ``v2.RandomCrop`` ->
``v2.RandomHorizontalFlip`` -> the weights' normalisation
(:class:`parsenet.preprocessing.ToModelInput`) and int64 labels. Evaluation: the
normalisation only (after a warp of the image alone, when training warps). Both are
callables ``(image, mask) -> (float32 3 x H x W, int64 H x W)`` that take uint8
``tv_tensors.Image`` / ``tv_tensors.Mask`` (plain tensors are wrapped).

The two small transforms here are what v2 lacks. ``v2.RandomResize`` and ``v2.ScaleJitter``
resize towards a fixed target size; the paper's recipes (DeepLab's) scale each image by a
random factor of its own size, which is :class:`RandomScale`. ``v2.RandomCrop(pad_if_needed
=True)`` pads on every side, so a small image lands at a random place in the crop; Caffe and
DeepLab pad after the content (bottom and right), which is :class:`PadToSize`. Images are
resampled bilinearly (antialiased when shrinking), labels with pixel-centre nearest
neighbour only, so a label is never interpolated. Padding: the image gets the uint8 colour
nearest the preprocessing mean (within half a grey level of zero once normalised), the label
255 (ignore).

The random numbers are drawn as the earlier hand-written ``RandomScaleCrop`` drew them: one
``torch.rand`` for the scale, then a crop row and a crop column only where the scaled image
exceeds the crop. So a fixed seed still picks the same scales, crops and flips.

Validity. ``with_valid=True`` makes the pipeline also return a bool H x W mask, true on the
image's own pixels and false on padding, so that pool6 can leave padding out (see
:mod:`parsenet.layers.context`). It rides through the same v2 steps as a second channel of
the label mask (1 on real pixels; padding fills masks with 255), so every geometric step
moves it exactly as it moves the labels.

Whole-image training (``crop_size=None``): no crop and no padding; the random scale, if
``scale_range`` is not (1, 1), resizes the whole image isotropically (never a warp).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torchvision import tv_tensors

from parsenet.labels import IGNORE_INDEX
from parsenet.preprocessing import IMAGENET, Preprocessing

__all__ = ["Warp", "RandomScale", "PadToSize", "JointTransforms", "train_transforms",
           "eval_transforms", "mean_fill"]


def mean_fill(preprocessing: Preprocessing) -> tuple[int, int, int]:
    """The uint8 RGB colour that normalisation maps to (about) zero: the padding colour."""
    mean = list(preprocessing.mean)
    if preprocessing.channel_order == "BGR":
        mean = mean[::-1]
    return tuple(int(min(max(round(m * 255.0 / preprocessing.pixel_max), 0), 255))
                 for m in mean)  # type: ignore[return-value]


def _pair_size(value: int | Sequence[int], what: str) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{what} must be a positive int or (h, w), got {value}")
    return size  # type: ignore[return-value]


def _one_size(flat_inputs: list[Any]) -> tuple[int, int]:
    sizes = {tuple(x.shape[-2:]) for x in flat_inputs if isinstance(x, Tensor)}
    if len(sizes) != 1:
        raise ValueError(f"image and mask sizes differ: {sorted(sizes)}")
    return sizes.pop()  # type: ignore[return-value]


def _resized(inpt: Any, size: Sequence[int]) -> Any:
    """Images bilinearly (antialiased when shrinking), masks pixel-centre nearest."""
    if list(inpt.shape[-2:]) == list(size):
        return inpt
    mode = (v2.InterpolationMode.NEAREST_EXACT if isinstance(inpt, tv_tensors.Mask)
            else v2.InterpolationMode.BILINEAR)
    return F.resize(inpt, list(size), interpolation=mode, antialias=True)


class Warp(v2.Transform):
    """Resize to ``size`` (h, w), aspect ratio not kept (``data.resize``). ``masks=False``
    leaves masks at their size: evaluation scores the full-size label."""

    def __init__(self, size: Sequence[int], masks: bool = True) -> None:
        super().__init__()
        self.size, self.masks = _pair_size(tuple(size), "resize"), masks

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask) and not self.masks:
            return inpt
        return _resized(inpt, self.size)


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale_range`` (isotropic, of the input's
    own size): images bilinearly, antialiased when shrinking; masks nearest neighbour,
    pixel-centre aligned (``NEAREST_EXACT``; v2's mask default ``NEAREST`` shifts labels by
    up to half a source pixel against the image)."""

    def __init__(self, scale_range: Sequence[float] = (0.5, 2.0)) -> None:
        super().__init__()
        low, high = (float(s) for s in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.scale_range = (low, high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _one_size(flat_inputs)
        low, high = self.scale_range
        # Drawn even when low == high: the crop and flip after it then read the same
        # random numbers whatever the range.
        scale = low + (high - low) * float(torch.rand(()).item())
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resized(inpt, params["size"])


class PadToSize(v2.Transform):
    """Pad at the bottom and right up to at least ``size`` (h, w): images with
    ``image_fill``, masks with ``mask_fill``. Inputs at least that large pass unchanged."""

    def __init__(self, size: int | Sequence[int], image_fill: Sequence[int] = (0, 0, 0),
                 mask_fill: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.size = _pair_size(size, "crop_size")
        self.image_fill = [int(v) for v in image_fill]
        self.mask_fill = int(mask_fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _one_size(flat_inputs)
        # F.pad's order: left, top, right, bottom.
        return {"padding": [0, 0, max(0, self.size[1] - width), max(0, self.size[0] - height)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.image_fill
        return F.pad(inpt, params["padding"], fill=fill)


class JointTransforms:
    """Applies a v2 pipeline to an (image, mask) pair and returns plain tensors:
    ``(image, mask)``, or ``(image, mask, valid)`` with ``with_valid`` (module docstring)."""

    def __init__(self, pipeline: v2.Transform, with_valid: bool = False) -> None:
        self.pipeline = pipeline
        self.with_valid = with_valid

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        if not isinstance(image, tv_tensors.Image):
            image = tv_tensors.Image(image)
        if self.with_valid:
            label = mask.as_subclass(Tensor)
            mask = torch.stack([label, torch.ones_like(label)])
        if not isinstance(mask, tv_tensors.Mask):
            mask = tv_tensors.Mask(mask)
        image, mask = self.pipeline(image, mask)
        image, mask = image.as_subclass(Tensor), mask.as_subclass(Tensor)
        if self.with_valid:
            return image, mask[0], mask[1] == 1
        return image, mask

    def __repr__(self) -> str:
        return f"JointTransforms({self.pipeline!r})"


def train_transforms(crop_size: int | Sequence[int] | None,
                     scale_range: Sequence[float] = (0.5, 2.0),
                     flip: bool = True, color_jitter: float = 0.0,
                     preprocessing: Preprocessing = IMAGENET,
                     with_valid: bool = False,
                     resize: Sequence[int] | None = None) -> JointTransforms:
    """The training pipeline: warp?, jitter?, random scale, pad + random crop, flip?,
    normalise.

    ``color_jitter`` > 0 jitters brightness, contrast and saturation by that fraction. It
    runs before the crop so the padding keeps the mean colour (zero after normalisation).
    ``crop_size=None``: whole images (scaled only if ``scale_range`` is not (1, 1)).
    ``with_valid``: also return the validity mask (module docstring). ``resize`` (h, w):
    first warp image and label to that size (:class:`Warp`).
    """
    steps: list[v2.Transform] = [Warp(resize)] if resize else []
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                    saturation=color_jitter))
    if crop_size is not None or tuple(scale_range) != (1.0, 1.0):
        steps.append(RandomScale(scale_range))
    if crop_size is not None:
        steps += [PadToSize(crop_size, image_fill=mean_fill(preprocessing)),
                  v2.RandomCrop(_pair_size(crop_size, "crop_size"))]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps += _to_model_input(preprocessing)
    return JointTransforms(v2.Compose(steps), with_valid=with_valid)


def _to_model_input(preprocessing: Preprocessing) -> list[v2.Transform]:
    return [preprocessing.transform, v2.ToDtype({tv_tensors.Mask: torch.int64, "others": None})]


def eval_transforms(preprocessing: Preprocessing = IMAGENET,
                    resize: Sequence[int] | None = None) -> JointTransforms:
    """The evaluation pipeline: normalisation only, at the image's own size, or with
    ``resize`` (h, w) the image warped to that size and the label left as it is."""
    steps = [Warp(resize, masks=False)] if resize else []
    return JointTransforms(v2.Compose(steps + _to_model_input(preprocessing)))
