"""The label-map convention every dataset, loss and metric here shares."""

from __future__ import annotations

import torch

__all__ = ["IGNORE_INDEX", "UINT8_CLASSES", "PNG_CLASSES", "label_dtype"]

# Pixels with this label count in no loss and no metric: VOC's object boundaries, SiftFlow's
# and CamVid's unlabelled pixels, crop padding. uint8 label maps keep 0..254 for classes.
IGNORE_INDEX = 255
# Predicted class ids of a model with up to this many classes fit uint8 (and an 8-bit palette
# PNG, VOC's and mmseg's format); more classes need wider ids and a 16-bit PNG, which holds
# up to PNG_CLASSES.
UINT8_CLASSES = 256
PNG_CLASSES = 1 << 16


def label_dtype(num_classes: int) -> torch.dtype:
    """The dtype of a predicted label map of a ``num_classes`` model: uint8 where every id
    fits, else int32 (torch has no general uint16), so no id wraps."""
    return torch.uint8 if num_classes <= UINT8_CLASSES else torch.int32
