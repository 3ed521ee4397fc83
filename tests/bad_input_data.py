"""The tiny folder-layout dataset both halves of the bad-input catalogue train and predict on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["sky", "ground", "thing"]


def write_dataset(root: Path, n: int = 2, classes: list[str] = CLASSES) -> Path:
    """images/ + labels/ for train and val, and classes.txt: 40 x 48 PNG pairs."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                root / "images" / split / f"im{i}.png")
            label = rng.integers(0, len(classes), (40, 48)).astype(np.uint8)
            Image.fromarray(label).save(root / "labels" / split / f"im{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root
