"""The one inference object behind ``predict``, ``eval`` and ``serve`` (as mmseg's inferencer).

An :class:`Inferencer` holds a model's runtime (eager, ONNX Runtime or OpenVINO: see
:mod:`parsenet.engine.backends`), its preprocessing, and its eval options (window, stride,
scales, flip). It decides per image how to run (:meth:`Inferencer.mode_for`: the requested
mode, or with ``"auto"`` the preferred one when its memory estimate fits the budget, else
sliding windows), counts the forward passes that takes (:meth:`Inferencer.passes`, for
progress), and turns an out-of-memory failure into one line naming the size that would fit.
The front ends only read files or uploads and write results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parsenet.choices import EVAL_MODES, MAX_SCALES
from parsenet.data.transforms import Warp
from parsenet.engine import inference
from parsenet.engine.inference import Predictor, window_starts
from parsenet.engine.memory import DEFAULT_BUDGET_GB, InferenceMemory, is_out_of_memory
from parsenet.errors import ResourceError, UsageError
from parsenet.labels import class_ids, label_dtype
from parsenet.preprocessing import Preprocessing

__all__ = ["Inferencer", "InferenceOptions", "MAX_SCALES", "checked_scales"]


def checked_scales(scales: Sequence[float], mode: str = "multiscale",
                   preferred: str | None = None) -> tuple[float, ...]:
    """``scales`` (``--scales``) as a tuple, or a one-line :class:`UsageError`: 1 to
    :data:`MAX_SCALES` finite numbers > 0 that some image may run at
    (:func:`~parsenet.engine.inference.scale_limit_problem`; each image's own size is
    checked when it runs), for a run that predicts multi-scale: ``mode``
    multiscale, or ``auto`` whose ``preferred`` mode (the model's eval mode; None: not
    known yet) is. Scales would be silently ignored in whole or slide mode."""
    shown = " ".join(f"{s:g}" for s in scales) if scales else "(none)"
    if not 1 <= len(scales) <= MAX_SCALES:
        raise UsageError(f"--scales {shown}: give 1 to {MAX_SCALES} scales (each is a "
                         f"forward pass an image, two with flip)")
    for scale in scales:
        if not (math.isfinite(scale) and scale > 0):
            raise UsageError(f"--scales {shown}: {scale:g} is not a scale; give finite "
                             f"numbers > 0 (1: the image's own size)")
        if (problem := inference.scale_limit_problem(scale)) is not None:
            raise UsageError(f"--scales {shown}: {problem}")
    if mode not in ("multiscale", "auto"):
        raise UsageError(f"--scales {shown}: scales apply to --mode multiscale, not --mode "
                         f"{mode}; add --mode multiscale or drop --scales")
    if mode == "auto" and preferred not in (None, "multiscale"):
        raise UsageError(f"--scales {shown}: this model's own eval mode is {preferred}, so "
                         f"--mode auto never runs multi-scale; add --mode multiscale")
    return tuple(float(s) for s in scales)


@dataclass(frozen=True)
class InferenceOptions:
    """How to run: ``mode`` (whole | slide | multiscale | auto), ``preferred`` (what auto
    uses when it fits: the config's eval mode), the sliding window, scales, flip, the
    memory ``budget_gb`` that auto keeps under, and ``resize``: None, or the (h, w) every
    image is warped to before it runs (a checkpoint's ``data.resize``, as its training and
    evaluation warped them), its scores resized back to the image's own size."""

    mode: str = "auto"
    preferred: str = "whole"
    window: int = 512
    stride: int = 341
    scales: tuple[float, ...] = (0.75, 1.0, 1.25)
    flip: bool = False
    budget_gb: float = DEFAULT_BUDGET_GB
    resize: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.mode not in (*EVAL_MODES, "auto"):
            raise UsageError(f"mode must be one of {(*EVAL_MODES, 'auto')}, got {self.mode!r}")
        if self.preferred not in EVAL_MODES:
            raise UsageError(f"preferred mode must be one of {EVAL_MODES}, got "
                             f"{self.preferred!r}")

    @classmethod
    def from_eval(cls, eval_cfg: Any, *, mode: str | None = None, window: int | None = None,
                  budget_gb: float = DEFAULT_BUDGET_GB,
                  resize: Sequence[int] | None = None, flip: bool | None = None,
                  scales: Sequence[float] | None = None) -> InferenceOptions:
        """Options from a config's ``eval`` section; ``mode`` None: the config's mode.
        A smaller ``window`` narrows the stride with it. ``resize``: the config's
        ``data.resize``. ``flip`` and ``scales`` (test-time augmentation; None: the
        config's) replace its own; scales are checked by :func:`checked_scales`."""
        window = window or eval_cfg.window
        mode = mode or eval_cfg.mode
        scales = (tuple(eval_cfg.scales) if scales is None
                  else checked_scales(scales, mode, eval_cfg.mode))
        return cls(mode=mode, preferred=eval_cfg.mode, window=window,
                   stride=min(eval_cfg.stride, window), scales=scales,
                   flip=bool(eval_cfg.flip if flip is None else flip), budget_gb=budget_gb,
                   resize=(int(resize[0]), int(resize[1])) if resize else None)

    @property
    def run_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~parsenet.engine.inference.predict_logits`."""
        return {"window": self.window, "stride": self.stride, "scales": self.scales,
                "flip": self.flip}


class _CountingPredictor:
    """The runtime, calling ``on_pass`` after every forward pass (progress of big images)."""

    def __init__(self, run: Predictor, on_pass: Callable[[], None]) -> None:
        self.run, self.on_pass = run, on_pass
        self.accepts_valid_mask = getattr(run, "accepts_valid_mask", False)

    def __call__(self, x: Tensor, **kwargs: Any) -> Tensor:
        out = self.run(x, **kwargs)
        self.on_pass()
        return out


@dataclass
class Inferencer:
    """A model's runtime with the rule that chooses how each image runs.

    Args:
        run: image batch N x 3 x H x W (normalised) -> logits N x K x H x W.
        num_classes: K.
        memory: the peak-memory model of ``run`` (:class:`InferenceMemory`).
        options: :class:`InferenceOptions`.
        preprocessing: uint8 RGB 3 x H x W -> normalised float image.
        backend: the runtime's name (eager, onnx, openvino, ...), for reports.
        device: where inputs go.
    """

    run: Predictor
    num_classes: int
    memory: InferenceMemory
    options: InferenceOptions = field(default_factory=InferenceOptions)
    preprocessing: Preprocessing | None = None
    backend: str = "eager"
    device: str | torch.device = "cpu"

    @classmethod
    def create(cls, model: nn.Module, *, num_classes: int,
               options: InferenceOptions | None = None, backend: str = "auto",
               device: str = "cpu", checkpoint: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None,
               preprocessing: Preprocessing | None = None) -> Inferencer:
        """The inferencer of ``model`` on ``backend`` (see
        :func:`parsenet.engine.backends.make_predictor`; ``checkpoint`` and ``cache_dir``
        key and place an export cache), its memory model measured on ``model``."""
        from parsenet.engine.backends import make_predictor, memory_overhead

        run, chosen = make_predictor(model, backend=backend, device=device,
                                     checkpoint=checkpoint, cache_dir=cache_dir)
        memory = InferenceMemory.of(model, num_classes, overhead=memory_overhead(chosen))
        return cls(run, num_classes, memory, options or InferenceOptions(),
                   preprocessing or getattr(model, "preprocessing", None), chosen, device)

    def with_options(self, **changes: Any) -> Inferencer:
        """A copy running the same runtime with some options changed (e.g. ``mode``)."""
        return replace(self, options=replace(self.options, **changes))

    @property
    def budget(self) -> float:
        return self.options.budget_gb * 1e9

    def run_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of this size runs at: ``options.resize`` if set, else its own
        (modes and passes are decided at this size)."""
        return self.options.resize or (height, width)

    def mode_for(self, height: int, width: int) -> str:
        """How an image of this size runs: the requested mode unless it is ``"auto"``; then
        the preferred mode when its memory estimate fits the budget, else ``"slide"``."""
        o = self.options
        if o.mode != "auto":
            return o.mode
        need = self.memory.estimate(o.preferred, height, width, window=o.window,
                                    scales=o.scales, flip=o.flip)
        return o.preferred if need <= self.budget else "slide"

    def largest_preferred_pixels(self) -> int:
        """Pixels of the largest square image that runs in the preferred mode under
        ``auto`` (larger ones slide)."""
        low, high = 0, 1 << 16
        while low < high:  # the estimate grows with the side: bisect for the last that fits
            side = (low + high + 1) // 2
            if self.with_options(mode="auto").mode_for(side, side) == "slide":
                high = side - 1
            else:
                low = side
        return low * low

    def passes(self, height: int, width: int, mode: str | None = None) -> int:
        """Forward passes that labelling an image of this size in ``mode`` makes."""
        o = self.options
        mode = mode or self.mode_for(height, width)
        views = 2 if o.flip else 1
        if mode == "multiscale":
            return views * len(o.scales)
        if mode == "slide":
            rows = len(window_starts(height, o.window, o.stride))
            return views * rows * len(window_starts(width, o.window, o.stride))
        return views

    def logits(self, batch: Tensor, mode: str | None = None) -> Tensor:
        """Logits N x K x H x W of a normalised batch (``mode`` None: :meth:`mode_for`)."""
        mode = mode or self.mode_for(*batch.shape[-2:])
        with torch.inference_mode():
            return inference.predict_logits(self.run, batch.to(self.device), mode,
                                  **self.options.run_options)

    def labels(self, batch: Tensor, mode: str | None = None,
               on_pass: Callable[[], None] | None = None,
               size: tuple[int, int] | None = None) -> Tensor:
        """Class ids N x H x W (int64, on the CPU) of a normalised batch; sliding windows
        keep only a band of logits (:func:`~parsenet.engine.inference.predict_labels`).
        ``size`` (h, w) other than the batch's: the class ids at that size, from the scores
        resized to it bilinearly (an image warped to ``data.resize``; full logits kept)."""
        mode = mode or self.mode_for(*batch.shape[-2:])
        run = self.run if on_pass is None else _CountingPredictor(self.run, on_pass)
        with torch.inference_mode():
            if size is None or tuple(size) == tuple(batch.shape[-2:]):
                return inference.predict_labels(run, batch.to(self.device), mode,
                                                **self.options.run_options).cpu()
            logits = inference.predict_logits(run, batch.to(self.device), mode,
                                              **self.options.run_options)
            return class_ids(F.interpolate(logits.float(), size=tuple(size), mode="bilinear",
                                           align_corners=False)).cpu()

    def label_image(self, image: Tensor, *, name: str = "image",
                    on_pass: Callable[[], None] | None = None,
                    mode: str | None = None) -> tuple[Tensor, str]:
        """(class ids H x W, the mode used) of a uint8 RGB 3 x H x W image, warped
        first to ``options.resize`` if set (the ids are still H x W); ``mode`` None:
        :meth:`mode_for` the size it runs at. The ids are uint8 for up to 256 classes, else
        int32 (:func:`~parsenet.labels.label_dtype`). Running out of memory raises a one-line
        :class:`ResourceError` naming ``name`` and the size that ran."""
        if self.preprocessing is None:
            raise UsageError("this inferencer has no preprocessing for uint8 images")
        size = (int(image.shape[-2]), int(image.shape[-1]))
        if self.options.resize:  # the warp of the eval transforms, exactly
            image = Warp(self.options.resize)(image)
        h, w = image.shape[-2:]
        mode = mode or self.mode_for(h, w)
        for scale in self.options.scales if mode == "multiscale" else ():
            if (problem := inference.scale_problem(h, w, scale)) is not None:
                raise UsageError(f"{name}: {problem}")  # before the scaled image exists
        try:
            batch = self.preprocessing(image).unsqueeze(0)
            labels = self.labels(batch, mode, on_pass, size)[0]
            return labels.to(label_dtype(self.num_classes)), mode
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            raise ResourceError(self.out_of_memory_message(name, h, w, mode)) from None

    def out_of_memory_message(self, name: str, height: int, width: int, mode: str) -> str:
        """One line: what ran out of memory and which size or mode would fit."""
        o, h, w, gb = self.options, height, width, self.options.budget_gb
        if mode == "slide":
            need = self.memory.slide(h, w, o.window, o.flip) / 1e9
            fits = self.memory.largest_window(h, w, self.budget, o.flip)
            return (f"{name}: out of memory predicting this {h}x{w} image in "
                    f"{o.window}x{o.window} sliding windows (estimated {need:.1f} GB); "
                    f"windows up to {fits}x{fits} fit in {gb:.1f} GB (--window {fits})")
        need = self.memory.estimate(mode, h, w, window=o.window, scales=o.scales,
                                    flip=o.flip) / 1e9
        side = self.memory.largest_whole_side(self.budget)
        return (f"{name}: out of memory predicting this {h}x{w} image {mode} (estimated "
                f"{need:.1f} GB); images up to about {side}x{side} fit whole in {gb:.1f} GB, "
                f"larger ones need --mode slide (or auto)")
