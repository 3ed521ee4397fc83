"""Where the synthetic dataset's objects go: random squares kept apart by a clearance.

Every placement consumes the same number of random draws however it goes, so a scene's
layout does not depend on which type it is (:func:`parsenet.data.synthetic.render_scene`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["gap", "place"]

Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive)


def gap(a: Box, b: Box) -> int:
    """Chebyshev distance between two boxes (negative when they overlap)."""
    dy = max(a[0] - b[2], b[0] - a[2])
    dx = max(a[1] - b[3], b[1] - a[3])
    return max(dy, dx)


def place(rng: np.random.Generator, size: int, half: int, others: list[tuple[Box, int]],
          tries: int = 60) -> Box | None:
    """A random square of side 2*half inside the image, at least ``clearance`` from each
    of ``others`` = [(box, clearance)], or None. Always consumes ``tries`` draws, so the
    random stream stays aligned however the placement goes."""
    ys = rng.integers(0, size - 2 * half + 1, tries)
    xs = rng.integers(0, size - 2 * half + 1, tries)
    for y, x in zip(ys, xs, strict=True):
        box = (int(y), int(x), int(y) + 2 * half, int(x) + 2 * half)
        if all(gap(box, o) >= clear for o, clear in others):
            return box
    return None
