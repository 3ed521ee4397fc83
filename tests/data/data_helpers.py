"""Helpers that write tiny datasets for the data tests (imported by the tests and conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from parsenet.data.palette import voc_palette

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


# ---- tiny datasets in the published layouts ----

SIZE = (12, 16)


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_for(blocky_label(*size, 5, seed), seed)).save(path)


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


VOC_TRAIN, VOC_VAL = ["2007_000001", "2007_000002"], ["2007_000003", "2008_000004"]
SBD_TRAIN, SBD_VAL = ["2007_000003", "2009_000005", "2009_000006"], ["2007_000001", "2010_000007"]


def voc_label(seed: int) -> np.ndarray:
    label = blocky_label(*SIZE, 21, seed, ignore_fraction=0.0)
    label[0, :] = 255  # VOC marks object boundaries 255
    return label


def sbd_label(seed: int) -> np.ndarray:
    return blocky_label(*SIZE, 21, seed + 100, ignore_fraction=0.0)


def write_voc(tmp_path: Path) -> Path:
    """VOCdevkit/VOC2012 (palette PNG labels) + benchmark_RELEASE (SBD .mat labels)."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for n, id_ in enumerate(sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))):
        write_jpeg(voc / "JPEGImages" / f"{id_}.jpg", n)
    (voc / "SegmentationClass").mkdir(parents=True)
    for n, id_ in enumerate(VOC_TRAIN + VOC_VAL):
        palette_png = Image.fromarray(voc_label(n), "P")
        palette_png.putpalette(voc_palette(256).ravel().tolist())
        palette_png.save(voc / "SegmentationClass" / f"{id_}.png")
    lists = voc / "ImageSets" / "Segmentation"
    write_lines(lists / "train.txt", VOC_TRAIN)
    write_lines(lists / "val.txt", VOC_VAL)
    write_lines(lists / "trainval.txt", VOC_TRAIN + VOC_VAL)
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    for n, id_ in enumerate(SBD_TRAIN + SBD_VAL):
        scipy.io.savemat(sbd / "cls" / f"{id_}.mat",
                         {"GTcls": {"Segmentation": sbd_label(n), "CategoriesPresent": [1]}})
    write_lines(sbd / "train.txt", SBD_TRAIN)
    write_lines(sbd / "val.txt", SBD_VAL)
    return tmp_path


def write_context(tmp_path: Path) -> Path:
    """JPEGImages + trainval/<id>.mat (459-class LabelMap) + train/val lists."""
    for n, id_ in enumerate(["2008_000001", "2008_000002", "2008_000003"]):
        write_jpeg(tmp_path / "JPEGImages" / f"{id_}.jpg", n)
        label_map = np.zeros(SIZE, dtype=np.uint16)
        label_map[:4] = 2  # aeroplane
        label_map[4:8] = 458  # wood
        label_map[8:, :8] = 5  # a class outside the 59 -> background
        label_map[8:, 8:] = 0  # unlabelled -> background
        (tmp_path / "trainval").mkdir(exist_ok=True)
        scipy.io.savemat(tmp_path / "trainval" / f"{id_}.mat", {"LabelMap": label_map})
    write_lines(tmp_path / "train.txt", ["2008_000001", "2008_000002"])
    write_lines(tmp_path / "val.txt", ["2008_000003"])
    return tmp_path


SUB = "spatial_envelope_256x256_static_8outdoorcategories"
SIFT_IDS = ["coast_a1", "coast_b2", "street_c3", "tallbuilding_d4"]


def write_siftflow(tmp_path: Path) -> Path:
    """Images/ + SemanticLabels/*.mat (S) + TestSet1.txt, as in SiftFlowDataset.zip."""
    for n, id_ in enumerate(SIFT_IDS):
        write_jpeg(tmp_path / "Images" / SUB / f"{id_}.jpg", n)
        s = np.zeros(SIZE, dtype=np.int32)
        s[:, 4:] = 1  # awning
        s[:, 8:] = 33  # window
        (tmp_path / "SemanticLabels" / SUB).mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(tmp_path / "SemanticLabels" / SUB / f"{id_}.mat", {"S": s})
    # The zip's test list names image paths, Windows style.
    write_lines(tmp_path / "TestSet1.txt", [f"Images\\{SUB}\\{SIFT_IDS[1]}.jpg"])
    return tmp_path


def write_camvid(tmp_path: Path) -> Path:
    """SegNet layout: train/, trainannot/, val/, valannot/ (void = 11)."""
    for split, count in (("train", 3), ("val", 2)):
        for n in range(count):
            id_ = f"0001TP_{split}_{n:03d}"
            (tmp_path / split).mkdir(exist_ok=True)
            Image.fromarray(image_for(blocky_label(*SIZE, 5, n), n)).save(
                tmp_path / split / f"{id_}.png")
            label = blocky_label(*SIZE, 11, n, ignore_fraction=0.0)
            label[0] = 11  # void
            (tmp_path / f"{split}annot").mkdir(exist_ok=True)
            Image.fromarray(label).save(tmp_path / f"{split}annot" / f"{id_}.png")
    return tmp_path
