"""One training iteration: micro-batches, the iteration's global loss denominator, backward,
and one optimizer step when the loss is finite (see the loss conventions in
:mod:`parsenet.engine.trainer`).

Subsampled loss (``train.loss_stride``). The loss may be taken on the pixels ``step * j +
first`` of each row and column only (:func:`loss_pixels`): where the bilinear upsampling of
the output grid (stride s, offset o) lands, at ``s / step`` samples per cell, on whole
pixels. The mean loss is then the full-resolution loss averaged over a regular
1-in-``step**2`` sample of the pixels, and the softmax and its backward cost ``step**2``
times less. A model with ``samples_pixels`` (ParseNet) computes its upsampled scores at
those pixels only (``forward(..., pixels=(first, step))``); any other model's full-size
output is indexed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from parsenet.engine import distributed as dist_utils
from parsenet.errors import ConfigError
from parsenet.labels import IGNORE_INDEX

__all__ = ["run_iteration", "micro_batches", "loss_pixels", "IGNORE_INDEX", "Batch"]


# (images, targets, valid or None): datasets may yield the validity mask of their padding.
# With a cached frozen prefix the "images" are the prefix's maps, a dict by stage name.
Batch = tuple["torch.Tensor | dict[str, torch.Tensor]", torch.Tensor, "torch.Tensor | None"]


def _to(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return inputs.to(device, non_blocking=True)


def micro_batches(loader_iter: Iterator, accumulate: int, device: torch.device
                  ) -> list[Batch]:
    """The next ``accumulate`` batches of the loader, on ``device``; a third element, the
    validity mask of the batch's padding, travels with it (pool6 averages real pixels only)."""
    out = []
    for _ in range(accumulate):
        images, targets, *rest = next(loader_iter)
        valid = rest[0].to(device, non_blocking=True) if rest else None
        out.append((_to(images, device),
                    targets.to(device, non_blocking=True).long(), valid))
    return out


def loss_pixels(stride: int, offset: float, step: int) -> tuple[int, int] | None:
    """``(first, step)`` of the loss sample ``step * j + first`` for a model whose output
    grid has ``stride`` and ``offset`` (None for ``step`` 1: every pixel). ``first`` is the
    pixel where the grid, upsampled by ``stride / step``, lands exactly on a whole pixel."""
    if step == 1:
        return None
    if stride % step:
        raise ConfigError(f"train.loss_stride: {step} does not divide the model's output "
                          f"stride {stride}")
    first = (offset - step * (stride // step - 1) / 2) % step
    if not float(first).is_integer():
        raise ConfigError(f"train.loss_stride: {step} samples the output grid (stride "
                          f"{stride}, offset {offset:g}) between pixels; use 1")
    return int(first), step


def _sampled(x: torch.Tensor, pixels: tuple[int, int] | None) -> torch.Tensor:
    if pixels is None:
        return x
    first, step = pixels
    return x[..., first::step, first::step]


def run_iteration(model: torch.nn.Module, batches: list[Batch],
                  stop: bool, loss_reduction: str, *, ctx: dist_utils.DistContext,
                  device: torch.device, amp: Any, scaler: Any, optimizer: Any,
                  scheduler: Any, class_weights: torch.Tensor | None = None,
                  loss_pixels: tuple[int, int] | None = None) -> tuple[float, bool]:
    """Forward/backward over the micro-batches, then (if the loss is finite) one optimizer
    step. Returns the iteration's loss and whether any rank wants to stop.

    ``class_weights`` (C,): each pixel's loss times its class's weight; the denominator of
    a mean loss stays the count of labelled pixels (the weights are scaled to a
    pixel-weighted mean of 1, :mod:`parsenet.engine.class_weights`). ``loss_pixels``
    (:func:`loss_pixels`): the loss on those pixels only."""
    batches = [(images, _sampled(targets, loss_pixels), valid)
               for images, targets, valid in batches]
    # The model's own attribute: DDP wraps it as .module, and passes forward's kwargs on.
    inside = loss_pixels is not None and getattr(getattr(model, "module", model),
                                                 "samples_pixels", False)
    if loss_reduction == "mean":
        local = sum(int((target != IGNORE_INDEX).sum()) for _, target, _ in batches)
    else:
        local = sum(target.shape[0] for _, target, _ in batches)
    denominator = dist_utils.all_reduce_sum(
        torch.tensor([float(local)], dtype=torch.float64), ctx).item()
    scale = ctx.world_size / max(denominator, 1.0)

    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for i, (images, targets, valid) in enumerate(batches):
        last = i == len(batches) - 1
        sync = model.no_sync() if ctx.enabled and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.dtype is not None):
                kwargs = {"pixels": loss_pixels} if inside else {}
                if valid is not None:
                    kwargs["valid"] = valid
                logits = model(images, **kwargs)
            if not inside:
                logits = _sampled(logits, loss_pixels)
            micro = F.cross_entropy(logits.float(), targets,
                                    weight=class_weights, ignore_index=IGNORE_INDEX,
                                    reduction="sum")
            loss = micro * scale
            (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += micro.detach().double()

    stats = torch.stack([loss_sum.cpu(), torch.tensor(float(stop), dtype=torch.float64)])
    stats = dist_utils.all_reduce_sum(stats, ctx)
    loss_value = stats[0].item() / max(denominator, 1.0)
    if not math.isfinite(loss_value):
        return loss_value, bool(stats[1].item())
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return loss_value, bool(stats[1].item())

