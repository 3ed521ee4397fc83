"""Per-class weights of the training loss, counted from the training labels.

``median_frequency`` is SegNet's median frequency balancing (Badrinarayanan et al. 2017,
after Eigen & Fergus 2015): with ``freq_c`` = pixels of class c / pixels of the images
where c appears, ``w_c = median(freq) / freq_c``. It is not the paper's: ParseNet, FCN and
DeepLab train with unweighted softmax loss. We rescale the weights so that their
pixel-weighted mean over the training labels is 1: the loss keeps the unweighted loss's
scale, so one LR means the same with and without weighting. Classes with no training pixel
get weight 0 (they contribute nothing to the loss either way).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from parsenet.labels import IGNORE_INDEX

__all__ = ["label_counts", "median_frequency_weights", "class_weights"]


def label_counts(read_label: Callable[[int], np.ndarray], count: int, num_classes: int,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of each class, pixels of the images in which each class appears) over the
    labels ``read_label(0..count-1)``; the ignore label and ids >= num_classes are not
    counted."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for i in tqdm(range(count), desc="class frequencies", disable=not progress):
        label = np.asarray(read_label(i))
        valid = label[(label != IGNORE_INDEX) & (label < num_classes)]
        hist = np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
        pixels += hist
        image_pixels[hist > 0] += valid.size
    return pixels, image_pixels


def median_frequency_weights(pixels: np.ndarray, image_pixels: np.ndarray) -> torch.Tensor:
    """SegNet's weights from :func:`label_counts`, rescaled to a pixel-weighted mean of 1."""
    present = pixels > 0
    if not present.any():
        raise ValueError("no labelled pixel to count class frequencies from")
    freq = np.zeros(len(pixels), dtype=np.float64)
    freq[present] = pixels[present] / image_pixels[present]
    weights = np.zeros_like(freq)
    weights[present] = np.median(freq[present]) / freq[present]
    weights /= float((weights * pixels).sum() / pixels.sum())
    return torch.tensor(weights, dtype=torch.float32)


def class_weights(kind: str, read_label: Callable[[int], np.ndarray], count: int,
                  num_classes: int, progress: bool = False) -> torch.Tensor | None:
    """The loss weights the config's ``train.class_weights`` names (None: unweighted)."""
    if kind == "none":
        return None
    if kind == "median_frequency":
        return median_frequency_weights(*label_counts(read_label, count, num_classes,
                                                      progress))
    raise ValueError(f"train.class_weights: unknown kind {kind!r}")
