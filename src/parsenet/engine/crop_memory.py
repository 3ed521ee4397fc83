"""Refuse a training crop that cannot fit in memory, before anything is allocated.

A typo such as ``data.crop_size=100000`` would otherwise reach the data loader's padding (a
30 GB uint8 image per crop) and then the model. Training keeps every layer's activations for
the backward pass, so it needs at least what one inference forward needs at the crop's size:
:class:`parsenet.engine.memory.InferenceMemory`'s whole-image estimate, times the batch. When
even that lower bound exceeds the device's memory, the run cannot work and is refused.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from parsenet.engine.memory import FLOAT, InferenceMemory
from parsenet.errors import ResourceError

__all__ = ["device_memory", "check_crop_fits"]

_MARGIN = 64


def device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (physical RAM for the CPU), None if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def check_crop_fits(model: nn.Module, num_classes: int, crop_size: int | None,
                    batch_size: int, device: torch.device) -> None:
    """Raise :class:`ResourceError` if a batch of ``crop_size`` crops needs more than the
    device's memory by the inference estimate (a lower bound for training)."""
    total = device_memory(device)
    if crop_size is None or total is None:
        return
    # The estimate's terms that need no probe forward: the input, two K-class logits maps
    # and the labels. The layers' own peak is within a few times that (VGG's conv1_1 output
    # at full resolution: 64 floats a pixel), so far below the limit the probe is skipped.
    floor = (FLOAT * (2 * num_classes + 3) + 8) * crop_size ** 2 * batch_size
    if floor * _MARGIN < total:
        return
    memory = InferenceMemory.of(model, num_classes)
    need = memory.whole(crop_size, crop_size) * batch_size
    if need > total:
        side = memory.largest_whole_side(total / batch_size)
        raise ResourceError(
            f"data.crop_size {crop_size}: a batch of {batch_size} crop(s) of "
            f"{crop_size}x{crop_size} needs more than {need / 1e9:.0f} GB on {device}, which "
            f"has {total / 1e9:.0f} GB; give a data.crop_size well below {side} (or a smaller "
            f"train.batch_size)")
