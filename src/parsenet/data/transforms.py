"""Joint image + label transforms on torchvision.transforms.v2.

Training: (optional colour jitter) -> random scale + random crop with padding -> random
horizontal flip -> normalisation. Evaluation: normalisation only. Both are callables
``(image, mask) -> (float32 3 x H x W, int64 H x W)`` that take uint8 ``tv_tensors.Image`` /
``tv_tensors.Mask`` (plain tensors are wrapped).

Speed: the random scale and the crop are one operation. The crop window is chosen in the
scaled frame, mapped back to the source image, and only that region is resized - so a 2x
zoom resizes a quarter of the image, not all of it. Enlarging uses OpenCV when installed
(torchvision otherwise), shrinking torchvision's antialiased kernel. Labels stay
single-channel uint8 until the last step and are only ever resampled with nearest
neighbour; normalisation is one uint8 -> float conversion followed by an in-place
multiply-add. Padding: the image gets the uint8 colour nearest the preprocessing mean
(within half a grey level of zero once normalised), the label 255.

Validity. ``with_valid=True`` makes the pipeline also return a bool H x W mask, true on the
image's own pixels and false on padding, so that pool6 can leave padding out (see
:mod:`parsenet.layers.context`). It rides through the same v2 steps as a second channel of
the label mask (1 on real pixels; the crop pads masks with 255), so every geometric step
moves it exactly as it moves the labels.

Whole-image training (``crop_size=None``): no crop and no padding; the random scale, if
``scale_range`` is not (1, 1), resizes the whole image isotropically (never a warp).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torchvision import tv_tensors

from parsenet.labels import IGNORE_INDEX
from parsenet.preprocessing import IMAGENET, Preprocessing

try:  # optional: a faster resize for the hot path; torchvision is the fallback
    import cv2 as _cv2
except ImportError:  # pragma: no cover - depends on the environment
    _cv2 = None

__all__ = ["RandomScaleCrop", "ToModelInput", "JointTransforms", "train_transforms",
           "eval_transforms", "mean_fill", "resize_nearest", "resize_bilinear"]


def mean_fill(preprocessing: Preprocessing) -> tuple[int, int, int]:
    """The uint8 RGB colour that normalisation maps to (about) zero: the padding colour."""
    mean = list(preprocessing.mean)
    if preprocessing.channel_order == "BGR":
        mean = mean[::-1]
    return tuple(int(min(max(round(m * 255.0 / preprocessing.pixel_max), 0), 255))
                 for m in mean)  # type: ignore[return-value]


def _window(size: int, scale: float, crop: int | None) -> tuple[int, int, int]:
    """One axis of a random crop of the image scaled by ``scale``.

    Returns (source start, source length, output length): the source span to resize to
    ``output length`` pixels. When the scaled image is shorter than the crop the whole axis
    is used and the rest of the crop is padding (after the content, as Caffe/DeepLab pad).
    """
    scaled = max(1, round(size * scale))
    if crop is None:  # scale only: the whole axis, resized
        return 0, size, scaled
    start = int(torch.randint(0, scaled - crop + 1, ()).item()) if scaled > crop else 0
    out = min(crop, scaled - start)
    src_start = min(int(round(start / scale)), size - 1)
    src_end = min(max(int(round((start + out) / scale)), src_start + 1), size)
    return src_start, src_end - src_start, out


def resize_nearest(mask: Tensor, height: int, width: int) -> Tensor:
    """Nearest-neighbour resize of a label map (H x W or C x H x W), pixel-centre aligned.

    Never interpolates: every output value is one of the input values.
    """
    if _cv2 is not None and mask.ndim == 2 and mask.dtype == torch.uint8:
        array = mask.numpy()
        if array.strides[-1] != 1:
            array = np.ascontiguousarray(array)
        return torch.from_numpy(_cv2.resize(array, (width, height),
                                            interpolation=_cv2.INTER_NEAREST_EXACT))
    squeeze = mask.ndim == 2
    out = F.resize_image(mask.unsqueeze(0) if squeeze else mask, [height, width],
                         interpolation=v2.InterpolationMode.NEAREST_EXACT)
    return out[0] if squeeze else out


def resize_bilinear(image: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of a uint8 3 x H x W image; antialiased when shrinking.

    Enlarging goes through OpenCV when it is installed (about 2.5x faster than torch on
    uint8); shrinking uses torchvision's antialiased kernel so small scales do not alias.
    """
    shrinking = height < image.shape[-2] or width < image.shape[-1]
    if (_cv2 is not None and not shrinking and image.ndim == 3 and image.dtype == torch.uint8
            and image.shape[0] in (1, 3)):
        array = image.permute(1, 2, 0).numpy()  # a view when the tensor is channels-last
        if array.strides[-1] != 1 or array.strides[-2] != image.shape[0]:
            array = np.ascontiguousarray(array)
        out = _cv2.resize(array, (width, height), interpolation=_cv2.INTER_LINEAR)
        return torch.from_numpy(out.reshape(height, width, -1)).permute(2, 0, 1)
    return F.resize_image(image, [height, width], antialias=True)


class RandomScaleCrop(v2.Transform):
    """Scale by a random factor in ``scale_range``, then take a random ``crop_size`` crop
    (``crop_size=None``: no crop, the whole scaled image).

    Images are resampled bilinearly (antialiased when shrinking) and padded with
    ``image_fill``; masks with nearest neighbour and padded with ``mask_fill`` (ignore).
    """

    def __init__(self, crop_size: int | Sequence[int] | None,
                 scale_range: Sequence[float] = (0.5, 2.0),
                 image_fill: Sequence[int] = (0, 0, 0), mask_fill: int = IGNORE_INDEX) -> None:
        super().__init__()
        crop = (None if crop_size is None else (crop_size, crop_size)
                if isinstance(crop_size, int) else tuple(crop_size))
        if crop is not None and (len(crop) != 2 or min(crop) < 1):
            raise ValueError(f"crop_size must be a positive int or (h, w), got {crop_size}")
        low, high = (float(s) for s in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.crop_size = crop
        self.scale_range = (low, high)
        self.image_fill = torch.tensor(list(image_fill), dtype=torch.uint8).view(-1, 1, 1)
        self.mask_fill = int(mask_fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        sizes = {tuple(x.shape[-2:]) for x in flat_inputs if isinstance(x, Tensor)}
        if len(sizes) != 1:
            raise ValueError(f"image and mask sizes differ: {sorted(sizes)}")
        height, width = sizes.pop()
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()).item())
        crop = self.crop_size or (None, None)
        return {"rows": _window(height, scale, crop[0]),
                "cols": _window(width, scale, crop[1])}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        top, src_h, out_h = params["rows"]
        left, src_w, out_w = params["cols"]
        is_mask = isinstance(inpt, tv_tensors.Mask)
        region = inpt.as_subclass(Tensor)[..., top:top + src_h, left:left + src_w]
        if (src_h, src_w) == (out_h, out_w):
            resized = region
        elif is_mask:
            resized = resize_nearest(region, out_h, out_w)
        else:
            resized = resize_bilinear(region, out_h, out_w)
        canvas = self.crop_size or (out_h, out_w)
        if self.crop_size is None and resized is not region:  # scaled whole image
            return tv_tensors.wrap(resized, like=inpt)
        out = region.new_empty((*region.shape[:-2], *canvas))
        if (out_h, out_w) != canvas:
            out.copy_(torch.tensor(self.mask_fill, dtype=out.dtype) if is_mask
                      else self.image_fill.to(out.dtype).expand_as(out))
        out[..., :out_h, :out_w] = resized
        return tv_tensors.wrap(out, like=inpt)


class ToModelInput(v2.Transform):
    """uint8 RGB image -> normalised float32 (``preprocessing``); mask -> int64."""

    def __init__(self, preprocessing: Preprocessing = IMAGENET) -> None:
        super().__init__()
        std = torch.tensor(preprocessing.std, dtype=torch.float32).view(3, 1, 1)
        mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(3, 1, 1)
        # (x / 255 * pixel_max - mean) / std  ==  x * scale + shift
        self.scale = preprocessing.pixel_max / 255.0 / std
        self.shift = -mean / std
        self.bgr = preprocessing.channel_order == "BGR"
        self.preprocessing = preprocessing

    def transform(self, inpt: Any, params: dict[str, Any]) -> Tensor:
        x = inpt.as_subclass(Tensor)
        if isinstance(inpt, tv_tensors.Mask):
            return x.to(torch.int64)
        if x.dtype != torch.uint8:
            raise TypeError(f"ToModelInput expects a uint8 image, got {x.dtype}")
        if self.bgr:
            x = x.flip(-3)
        return x.to(torch.float32, memory_format=torch.contiguous_format).mul_(self.scale
                                                                               ).add_(self.shift)


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
                     with_valid: bool = False) -> JointTransforms:
    """The training pipeline: jitter?, random scale + crop (padded), flip?, normalise.

    ``color_jitter`` > 0 jitters brightness, contrast and saturation by that fraction. It
    runs before the crop so the padding keeps the mean colour (zero after normalisation).
    ``crop_size=None``: whole images (scaled only if ``scale_range`` is not (1, 1)).
    ``with_valid``: also return the validity mask (module docstring).
    """
    steps: list[v2.Transform] = []
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                    saturation=color_jitter))
    if crop_size is not None or tuple(scale_range) != (1.0, 1.0):
        steps.append(RandomScaleCrop(crop_size, scale_range,
                                     image_fill=mean_fill(preprocessing)))
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps.append(ToModelInput(preprocessing))
    return JointTransforms(v2.Compose(steps), with_valid=with_valid)


def eval_transforms(preprocessing: Preprocessing = IMAGENET) -> JointTransforms:
    """The evaluation pipeline: normalisation only, at the image's own size."""
    return JointTransforms(ToModelInput(preprocessing))
