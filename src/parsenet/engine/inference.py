"""Inference at test time: whole image, sliding windows, multi-scale (+ flip); evaluation.

ParseNet was evaluated on whole images at their native size (``mode="whole"``); the other
modes are the usual ways to run a segmentation model on images too large for memory
(``slide``) or to buy accuracy with compute (``multiscale``).

Sliding windows are clipped to the image, as in mmsegmentation's ``slide_inference``: an
image smaller than the window is one window, the whole image, not a padded one. Padding is
used only where the model needs it: images below its 32-pixel minimum are padded with 0, the
mean colour of a normalised image, and the logits cropped back. A model that
``accepts_valid_mask`` (ParseNet) is told which pixels are padding, so its pool6 averages
the real pixels only, as in training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from parsenet.choices import EVAL_MODES
from parsenet.data.image_safety import DEFAULT_MAX_PIXELS
from parsenet.errors import UsageError
from parsenet.labels import class_ids

__all__ = ["predict_logits", "predict_labels", "window_starts", "MIN_SIZE",
           "MAX_SCALED_PIXELS", "scale_problem", "scale_limit_problem"]

MIN_SIZE = 32  # smallest H, W the backbones accept
# The most pixels a multi-scale pass may enlarge an image to (--scales, eval.scales): the
# decode limit of predict and serve, 40 MP. A larger scaled image is refused before it is
# allocated: its activations alone would take tens of GB, and a scale like 1e6 would ask for
# a tensor no machine holds (a traceback, or the process killed for memory). Scales <= 1
# never enlarge an image and are not limited.
MAX_SCALED_PIXELS = DEFAULT_MAX_PIXELS


def scale_problem(height: int, width: int, scale: float) -> str | None:
    """Why ``scale`` may not run on a ``height`` x ``width`` image (it would enlarge it past
    :data:`MAX_SCALED_PIXELS`), or None."""
    pixels = float(height) * scale * float(width) * scale  # float: 1e300 must not overflow
    if scale <= 1 or pixels <= MAX_SCALED_PIXELS:
        return None
    return (f"scale {scale:g} would make this {height}x{width} image {pixels / 1e6:.3g} "
            f"megapixels, over the {MAX_SCALED_PIXELS / 1e6:g} megapixels a scaled image may "
            f"have; give smaller scales")


def scale_limit_problem(scale: float) -> str | None:
    """Why ``scale`` may run on no image at all (it enlarges even the smallest one a model
    takes past :data:`MAX_SCALED_PIXELS`), or None: checkable before anything is loaded."""
    if scale_problem(MIN_SIZE, MIN_SIZE, scale) is None:
        return None
    return (f"{scale:g} would enlarge even a {MIN_SIZE}x{MIN_SIZE} image (the smallest a model "
            f"takes) past the {MAX_SCALED_PIXELS / 1e6:g} megapixels a scaled image may have; "
            f"give smaller scales")


Predictor = Callable[[Tensor], Tensor]  # an nn.Module, or e.g. an OnnxPredictor


def _forward(model: Predictor, x: Tensor) -> Tensor:
    """model(x), padding x at the bottom/right to MIN_SIZE if smaller."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max(0, MIN_SIZE - h), max(0, MIN_SIZE - w)
    if pad_h or pad_w:
        padded = F.pad(x, (0, pad_w, 0, pad_h))
        if getattr(model, "accepts_valid_mask", False):
            valid = torch.zeros(x.shape[0], h + pad_h, w + pad_w, dtype=torch.bool,
                                device=x.device)
            valid[:, :h, :w] = True
            return model(padded, valid=valid)[..., :h, :w]
        return model(padded)[..., :h, :w]
    return model(x)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Where the sliding windows along one side start: clipped to the image, one window
    when the side fits in it."""
    if size <= window:
        return [0]
    n = math.ceil((size - window) / stride) + 1
    return [min(i * stride, size - window) for i in range(n)]


def _slide(model: Predictor, x: Tensor, window: int, stride: int) -> Tensor:
    h, w = x.shape[-2:]
    ys, xs = window_starts(h, window, stride), window_starts(w, window, stride)
    if len(ys) == 1 and len(xs) == 1:
        return _forward(model, x)
    total: Tensor | None = None
    count = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
    for y in ys:
        for x0 in xs:
            crop = x[..., y:y + window, x0:x0 + window]
            logits = _forward(model, crop)
            if total is None:
                total = x.new_zeros(x.shape[0], logits.shape[1], h, w)
            total[..., y:y + crop.shape[-2], x0:x0 + crop.shape[-1]] += logits
            count[..., y:y + crop.shape[-2], x0:x0 + crop.shape[-1]] += 1
    assert total is not None
    # In place: a second K x H x W map would double the peak memory of large images.
    return total.div_(count)


def _single(model: Predictor, x: Tensor, sliding: bool, window: int, stride: int) -> Tensor:
    return _slide(model, x, window, stride) if sliding else _forward(model, x)


def predict_logits(
    model: Predictor,
    image: Tensor,
    mode: str = "whole",
    *,
    window: int = 512,
    stride: int = 341,
    scales: Sequence[float] = (0.75, 1.0, 1.25),
    flip: bool = False,
) -> Tensor:
    """Logits N x K x H x W for a normalised image batch N x 3 x H x W (N is usually 1).

    ``model`` is anything that maps N x 3 x h x w to N x K x h x w logits: a model, or a
    predictor of :mod:`parsenet.engine.export` (ONNX Runtime, channels_last).

    Args:
        mode: ``"whole"`` (one pass at native size, the paper's protocol), ``"slide"``
            (``window`` x ``window`` crops every ``stride`` pixels, overlaps averaged) or
            ``"multiscale"`` (the image resized by each of ``scales``, predicted whole, the
            logits resized back bilinearly and averaged).
        flip: also predict the horizontally flipped image(s) and average (any mode).

    Runs under whatever grad mode the caller set; wrap in ``torch.inference_mode()``.
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be N x 3 x H x W, got {tuple(image.shape)}")
    if mode == "slide" and (window < 1 or stride < 1 or stride > window):
        raise ValueError(f"need 1 <= stride <= window, got window={window} stride={stride}")
    if mode == "multiscale" and (not scales or any(s <= 0 for s in scales)):
        raise ValueError(f"scales must be positive, got {tuple(scales)}")
    h, w = image.shape[-2:]
    for scale in scales if mode == "multiscale" else ():
        if (problem := scale_problem(h, w, scale)) is not None:
            raise UsageError(problem)
    sliding = mode == "slide"
    views = [image.flip(-1)] if flip else []
    views.insert(0, image)
    total: Tensor | None = None
    n = 0
    for flipped, view in enumerate(views):
        for scale in scales if mode == "multiscale" else (1.0,):
            x = view
            if scale != 1.0:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                x = F.interpolate(view, size=size, mode="bilinear", align_corners=False)
            logits = _single(model, x, sliding, window, stride)
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear",
                                       align_corners=False)
            if flipped:
                logits = logits.flip(-1)
            total = logits if total is None else total + logits
            n += 1
    assert total is not None
    return total.div_(n) if n > 1 else total


def _band_windows(model: Predictor, x: Tensor, y: int, xs: list[int], window: int,
                  flip: bool, acc: list[Tensor | None], count: Tensor) -> None:
    """Add the logits of the windows at row ``y`` into the band accumulators ``acc`` (rows
    from ``y``), in the order :func:`_slide` adds them; ``acc[1]``: the flipped image's."""
    w = x.shape[-1]
    for x0 in xs:
        crop = x[..., y:y + window, x0:x0 + window]
        ch, cw = crop.shape[-2:]
        logits = _forward(model, crop)
        if acc[0] is None:
            acc[0] = x.new_zeros(x.shape[0], logits.shape[1], count.shape[-2], w)
            acc[1] = torch.zeros_like(acc[0]) if flip else None
        acc[0][..., :ch, x0:x0 + cw] += logits
        count[..., :ch, x0:x0 + cw] += 1
        if flip:  # the flipped image's window at x0 covers columns w - x0 - cw ..  w - x0
            mirrored = x[..., y:y + ch, w - x0 - cw:w - x0].flip(-1)
            acc[1][..., :ch, w - x0 - cw:w - x0] += _forward(model, mirrored).flip(-1)


def _slide_labels(model: Predictor, x: Tensor, window: int, stride: int, flip: bool
                  ) -> Tensor:
    """argmax of ``predict_logits(mode="slide")`` holding only a band of window rows of
    logits: rows above the next window row are final and are reduced to labels at once."""
    n, _, h, w = x.shape
    ys, xs = window_starts(h, window, stride), window_starts(w, window, stride)
    band = min(window, h)
    labels = torch.empty(n, h, w, dtype=torch.int64, device=x.device)
    acc: list[Tensor | None] = [None, None]
    count = torch.zeros(1, 1, band, w, dtype=x.dtype, device=x.device)
    for i, y in enumerate(ys):
        _band_windows(model, x, y, xs, window, flip, acc, count)
        done = (ys[i + 1] - y) if i + 1 < len(ys) else min(band, h - y)
        assert acc[0] is not None
        logits = acc[0][..., :done, :].div(count[..., :done, :])
        if flip:
            logits = logits.add_(acc[1][..., :done, :].div(count[..., :done, :].flip(-1))
                                 ).div_(2)
        labels[:, y:y + done] = class_ids(logits)
        for a in (*[t for t in acc if t is not None], count):  # shift the band up
            a[..., :band - done, :] = a[..., done:, :].clone()
            a[..., band - done:, :] = 0
    return labels


def predict_labels(model: Predictor, image: Tensor, mode: str = "whole", *,
                   window: int = 512, stride: int = 341,
                   scales: Sequence[float] = (0.75, 1.0, 1.25), flip: bool = False
                   ) -> Tensor:
    """Class ids N x H x W: the argmax of :func:`predict_logits`.

    In ``"slide"`` mode the logits are never held for the whole image, only for one band of
    window rows (``K x window x W``), so a 6000 x 6000 photo needs about a tenth of the
    memory. The labels equal ``predict_logits(...).argmax(1)`` exactly, with or without
    ``flip``: the same windows, summed in the same order.
    """
    if mode != "slide":
        return class_ids(predict_logits(model, image, mode, window=window, stride=stride,
                                        scales=scales, flip=flip))
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be N x 3 x H x W, got {tuple(image.shape)}")
    if window < 1 or stride < 1 or stride > window:
        raise ValueError(f"need 1 <= stride <= window, got window={window} stride={stride}")
    return _slide_labels(model, image, window, stride, flip)
