"""PASCAL VOC 2012 segmentation, with the SBD augmentation ("train_aug").

Layout (as downloaded and unpacked)::

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2012/SegmentationClass/<id>.png       palette PNG: index = class,
                                                              255 = object boundary (ignore)
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    <root>/benchmark_RELEASE/dataset/cls/<id>.mat             SBD (Hariharan et al. 2011):
                                                              GTcls.Segmentation, 0..20
    <root>/benchmark_RELEASE/dataset/{train,val}.txt

``root`` may also be the VOC2012 folder itself; ``sbd_root`` may point elsewhere (to
``benchmark_RELEASE`` or its ``dataset`` folder).

Splits: ``train`` (1,464), ``val`` (1,449), ``trainval`` from VOC's lists, and
``train_aug``, the 10,582 images DeepLab, ParseNet and most later work train on:
(SBD train + SBD val + VOC train) minus VOC val, so no validation image is trained on.
Each ``train_aug`` image takes VOC's own label PNG when VOC has one (its boundaries are
marked 255) and SBD's .mat label otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from parsenet.data.dataset import SegmentationDataset, Transforms, read_id_list
from parsenet.data.decode import check_label_values, read_label_png, read_mat_array
from parsenet.data.errors import DataError
from parsenet.data.palette import voc_palette

__all__ = ["VOCSegmentation", "VOC_CLASSES", "VOC_SPLITS", "find_voc2012"]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval", "train_aug")


def find_voc2012(root: Path) -> Path:
    """The VOC2012 folder (the one holding JPEGImages) under ``root``."""
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(f"{root}: no VOC2012 folder (looked for VOCdevkit/VOC2012/JPEGImages, "
                    "VOC2012/JPEGImages and JPEGImages)")


def _find_sbd(root: Path, sbd_root: Path | None) -> Path:
    candidates = ([sbd_root / "dataset", sbd_root] if sbd_root is not None else
                  [root / "benchmark_RELEASE" / "dataset", root / "SBD" / "dataset"])
    for candidate in candidates:
        if (candidate / "cls").is_dir():
            return candidate
    looked = " or ".join(str(c / "cls") for c in candidates)
    raise DataError(f"split 'train_aug' needs the SBD dataset: no folder {looked}")


def _stems(folder: Path, suffix: str) -> set[str]:
    return {p.stem for p in folder.iterdir() if p.suffix == suffix} if folder.is_dir() else set()


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation: 21 classes (background + 20), 255 = ignore."""

    def __init__(self, root: str | PathLike, split: str = "train", *,
                 ids: Sequence[str] | None = None, transforms: Transforms | None = None,
                 sbd_root: str | PathLike | None = None) -> None:
        if split not in VOC_SPLITS:
            raise DataError(f"VOC split {split!r} unknown; expected one of {VOC_SPLITS}")
        voc = find_voc2012(Path(root))
        lists = voc / "ImageSets" / "Segmentation"
        voc_labels = voc / "SegmentationClass"
        if split == "train_aug":
            sbd = _find_sbd(Path(root), Path(sbd_root) if sbd_root is not None else None)
            voc_val = set(read_id_list(lists / "val.txt"))
            pool = (set(read_id_list(sbd / "train.txt")) | set(read_id_list(sbd / "val.txt"))
                    | set(read_id_list(lists / "train.txt")))
            split_ids = sorted(pool - voc_val)
        else:
            sbd = None
            split_ids = read_id_list(lists / f"{split}.txt")
        if ids is not None:
            unknown = sorted(set(ids) - set(split_ids))
            if unknown:
                raise DataError(f"{voc}: id(s) {unknown[:5]} are not in split {split!r}")
            split_ids = list(ids)
        jpegs = _stems(voc / "JPEGImages", ".jpg")
        pngs = _stems(voc_labels, ".png")
        sbd_mats = _stems(sbd / "cls", ".mat") if sbd is not None else set()
        sbd_jpegs = _stems(sbd / "img", ".jpg") if sbd is not None else set()
        images, labels, missing = [], [], []
        for i in split_ids:
            if i in jpegs:
                images.append(voc / "JPEGImages" / f"{i}.jpg")
            elif i in sbd_jpegs:
                images.append(sbd / "img" / f"{i}.jpg")  # type: ignore[operator]
            else:
                missing.append(f"image {i}.jpg")
            if i in pngs:
                labels.append(voc_labels / f"{i}.png")
            elif i in sbd_mats:
                labels.append(sbd / "cls" / f"{i}.mat")  # type: ignore[operator]
            else:
                missing.append(f"label {i}.png" + (" / .mat" if sbd is not None else ""))
        if missing:
            raise DataError(f"{voc}: split {split!r} lists files that do not exist: "
                            f"{', '.join(missing[:5])}" + (f", ... ({len(missing)} in all)"
                                                           if len(missing) > 5 else ""))
        self.root, self.split = voc, split
        super().__init__(ids=split_ids, image_paths=images, label_paths=labels,
                         classes=VOC_CLASSES, palette=voc_palette(len(VOC_CLASSES)),
                         transforms=transforms, source=f"{voc} [{split}]")

    def read_label(self, index: int) -> np.ndarray:
        path = self.label_path(index)
        if path.suffix == ".mat":
            raw = read_mat_array(path, "GTcls", "Segmentation")
            if raw.min() < 0 or raw.max() > 255:
                raise DataError(f"{path}: GTcls.Segmentation values outside 0..255")
            label = raw.astype(np.uint8)
        else:
            label = read_label_png(path, max_pixels=self.max_pixels)
        return check_label_values(label, self.num_classes, path)
