"""What the synthetic context dataset draws (:mod:`parsenet.data.synthetic` has the rules):
each object kind's mask and colours in its bounding square, and the background's smooth
colour field. The renderers are not told the scene: that a striped ellipse looks the same
whether it is labelled cat or bird is what makes the dataset's ambiguity real.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["RENDERERS", "background"]


def _grid(half: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(-half, half, dtype=np.float32) + 0.5
    return np.meshgrid(r, r, indexing="ij")


def _rotated(half: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _grid(half)
    c, s = np.cos(angle), np.sin(angle)
    return c * xx + s * yy, -s * xx + c * yy


def _striped_ellipse(rng: np.random.Generator, half: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = _rotated(half, rng.uniform(0, np.pi))
    a = half * rng.uniform(0.9, 1.0)
    b = a * rng.uniform(0.65, 0.95)
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    base = np.array([150, 95, 55], np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
    period, phase = rng.uniform(9, 15), rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * u / period + phase)[..., None]
    colour = base + 45 * stripes
    return mask, colour


def _checkered_rectangle(rng: np.random.Generator, half: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = _rotated(half, rng.uniform(0, np.pi / 2))
    hu = half * rng.uniform(0.7, 0.75)  # a rotated rectangle must stay inside the square
    hv = hu * rng.uniform(0.65, 0.85)
    corner = 0.3 * hv
    du, dv = np.maximum(np.abs(u) - (hu - corner), 0), np.maximum(np.abs(v) - (hv - corner), 0)
    mask = du ** 2 + dv ** 2 <= corner ** 2
    cell = rng.uniform(10, 16)
    checker = ((np.floor(u / cell) + np.floor(v / cell)) % 2)[..., None]
    dark = np.array([110, 60, 140], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    light = np.array([200, 190, 120], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    return mask, dark + (light - dark) * checker


def _ball(rng: np.random.Generator, half: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _grid(half)
    r2 = (yy ** 2 + xx ** 2) / half ** 2
    mask = r2 <= 1.0
    shade = (1.0 - 0.5 * ((yy + 0.4 * half) ** 2 + (xx + 0.4 * half) ** 2) / half ** 2)[..., None]
    base = np.array([215, 35, 35], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    return mask, base * np.clip(shade, 0.45, 1.0) + 30 * (shade > 0.9)


def _box(rng: np.random.Generator, half: int) -> tuple[np.ndarray, np.ndarray]:
    # A rounded square, shaded along one side. Sharp corners and a thin dark border would be
    # finer than the output stride: they hold the box's IU near 84 for both models,
    # measuring resolution rather than training.
    u, v = _rotated(half, rng.uniform(0, np.pi / 2))
    h, corner = 0.76 * half, 0.3 * half  # fits the square at any rotation
    du = np.maximum(np.abs(u) - (h - corner), 0)
    dv = np.maximum(np.abs(v) - (h - corner), 0)
    mask = du ** 2 + dv ** 2 <= corner ** 2
    base = np.array([45, 85, 215], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    return mask, base * (0.8 + 0.2 * (u / h))[..., None]


def _lamp(rng: np.random.Generator, half: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _grid(half)
    r = np.sqrt(yy ** 2 + xx ** 2) / half
    mask = r <= 1.0
    yellow = np.array([250, 225, 60], np.float32) + rng.uniform(-10, 5, 3).astype(np.float32)
    ring = np.array([235, 120, 20], np.float32)
    return mask, np.where((r > 0.7)[..., None], ring, yellow)


def _tree(rng: np.random.Generator, half: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _grid(half)
    y, x = yy / half, xx / half  # -1 (top) .. 1 (bottom), -1 (left) .. 1 (right)
    # A round crown on a trunk wider than the output stride: a thinner trunk or a pointed
    # crown is below the resolution of a stride-8 network and holds the tree's IU near 79
    # for both models whatever the context.
    crown = x ** 2 + (y + 0.25) ** 2 <= 0.75 ** 2
    trunk = (y > 0.3) & (np.abs(x) <= 0.36)
    green = np.array([35, 150, 45], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    brown = np.array([100, 60, 30], np.float32)
    return crown | trunk, np.where(trunk[..., None], brown, green)


RENDERERS = {"striped_ellipse": _striped_ellipse, "checkered_rectangle": _checkered_rectangle,
             "ball": _ball, "box": _box, "lamp": _lamp, "tree": _tree}


@lru_cache(maxsize=8)
def _upsampler(size: int, cells: int) -> np.ndarray:
    """size x cells matrix of bilinear weights (align-corners) from a coarse grid to pixels."""
    pos = np.linspace(0, cells - 1, size)
    lower = np.minimum(np.floor(pos).astype(int), cells - 2)
    frac = pos - lower
    weights = np.zeros((size, cells), np.float32)
    weights[np.arange(size), lower] = 1 - frac
    weights[np.arange(size), lower + 1] = frac
    return weights


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour field: a coarse random grid bilinearly upsampled, same for all scenes."""
    base = rng.uniform(110, 170) + rng.uniform(-15, 15, 3)
    coarse = rng.normal(0, 18, (5, 5, 3)).astype(np.float32)
    up = _upsampler(size, 5)
    rows = np.tensordot(up, coarse, axes=(1, 0))  # size x 5 x 3: upsampled along y
    field_ = np.empty((size, size, 3), np.float32)
    for c in range(3):  # then along x; three small matmuls beat one einsum by 10x
        field_[..., c] = rows[..., c] @ up.T + np.float32(base[c])
    return field_
