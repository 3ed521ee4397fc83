"""A tiny three-class folder dataset for the study tests (sky above ground, a square thing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_study_dataset(root: Path, n: int = 12, size: int = 40, moving: bool = False) -> Path:
    """``n`` noisy images with their labels under ``root`` (split ``all``); ``moving``: the
    thing moves one pixel right per image, so that images differ in more than noise."""
    rng = np.random.default_rng(0)
    (root / "images" / "all").mkdir(parents=True)
    (root / "labels" / "all").mkdir(parents=True)
    (root / "classes.txt").write_text("sky\nground\nthing\n")
    for i in range(n):
        label = np.zeros((size, size), np.uint8)
        label[size // 2:] = 1
        shift = i if moving else 0
        label[5:15, 5 + shift:15 + shift] = 2
        image = np.stack([label * 90] * 3, -1) + rng.integers(0, 40, (size, size, 3))
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / "all" / f"{i:03d}.png")
        Image.fromarray(label).save(root / "labels" / "all" / f"{i:03d}.png")
    return root
