"""Helpers that write tiny datasets for the data tests (imported by the tests and conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def blocky_label(height: int, width: int, num_classes: int, seed: int,
                 ignore_fraction: float = 0.05) -> np.ndarray:
    """A label map of 4x4-pixel blocks of random classes, a few blocks ignored (255)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, num_classes, (height // 4 + 1, width // 4 + 1), dtype=np.uint8)
    blocks[rng.random(blocks.shape) < ignore_fraction] = 255
    return np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)[:height, :width].copy()


def image_for(label: np.ndarray, seed: int) -> np.ndarray:
    """An RGB image whose colour is a function of the label (so geometry can be checked)."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    return colors[label]


def write_folder_dataset(root: Path, split: str = "train", *, num_images: int = 4,
                         size: tuple[int, int] = (24, 32), num_classes: int = 3,
                         split_list: bool = True, image_format: str = "jpg") -> list[str]:
    """The common layout with ``num_images`` pairs of size (H, W); returns the ids."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"class{k}\n" for k in range(num_classes)))
    ids = [f"{split}_{i:03d}" for i in range(num_images)]
    for n, id_ in enumerate(ids):
        label = blocky_label(*size, num_classes, seed=n)
        Image.fromarray(image_for(label, n)).save(root / "images" / split / f"{id_}.{image_format}")
        Image.fromarray(label).save(root / "labels" / split / f"{id_}.png")
    if split_list:
        # Reverse order: readers must keep the list's order, not sort it.
        (root / f"{split}.txt").write_text("".join(f"{i}\n" for i in reversed(ids)))
    return ids


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "classes.txt").is_file():
        pytest.skip(f"real dataset {name} not available at {path}")
    return path
