"""Colour palettes for label maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from parsenet.data.errors import DataError

__all__ = ["voc_palette", "as_palette"]


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """PASCAL VOC's colormap: num_colors x 3 uint8.

    Colour k spreads the bits of k over the high bits of R, G and B (bit 0 -> R, bit 1 -> G,
    bit 2 -> B, next three bits one place lower, ...), so neighbouring indices get distinct
    colours and index 0 is black. It is the palette of VOC's SegmentationClass PNGs.
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        k, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (k & 1) << shift
            g |= ((k >> 1) & 1) << shift
            b |= ((k >> 2) & 1) << shift
            k >>= 3
            if k == 0:
                break
        palette[index] = (r, g, b)
    return palette


def as_palette(palette: np.ndarray | Sequence[Sequence[int]] | None, num_classes: int,
               where: str) -> np.ndarray:
    """A K x 3 uint8 palette from user input; VOC's colormap when ``palette`` is None."""
    if palette is None:
        return voc_palette(num_classes)
    array = np.asarray(palette)
    if array.shape != (num_classes, 3) or array.min() < 0 or array.max() > 255:
        raise DataError(f"{where}: palette must be {num_classes} x 3 values in 0..255, "
                        f"got shape {array.shape}")
    return array.astype(np.uint8)
