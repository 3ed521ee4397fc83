"""SiftFlow / LabelMe Outdoor (Liu, Yuen, Torralba 2009): 33 semantic classes.

Original layout (``SiftFlowDataset.zip``)::

    <root>/Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg
    <root>/SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat
        S: 256 x 256 ints, 1..33 the classes (classes.txt order), 0 = unlabelled

Labels become ``S - 1`` (0..32) with 0 -> 255 (ignore). Splits: ``<root>/<split>.txt``
when present (FCN's ``trainval.txt`` / ``test.txt``: one id per line); otherwise the
zip's ``TestSet1.txt`` (the 200 test images, one path per line) gives ``test`` and
everything else is ``trainval``; ``all`` is every image.

A root in the common layout (``classes.txt``, ``images/<split>/``, as in
/work/shared/data/siftflow) is read by :class:`SegmentationFolder` instead; use
:func:`siftflow_dataset` to get whichever fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from parsenet.data.dataset import SegmentationDataset, Transforms, pair_files, read_id_list
from parsenet.data.decode import map_label_values, read_mat_array
from parsenet.data.errors import DataError
from parsenet.data.folder import SegmentationFolder, is_folder_layout
from parsenet.data.palette import voc_palette
from parsenet.labels import IGNORE_INDEX

__all__ = ["SiftFlow", "SIFTFLOW_CLASSES", "siftflow_dataset"]

SIFTFLOW_CLASSES = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow",
    "crosswalk", "desert", "door", "fence", "field", "grass", "moon", "mountain", "person",
    "plant", "pole", "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky",
    "staircase", "streetlight", "sun", "tree", "window",
)
_SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"
_TRAINVAL_NAMES = ("train", "trainval")


def _stem(line: str) -> str:
    return Path(line.strip().replace("\\", "/")).stem


class SiftFlow(SegmentationDataset):
    """SiftFlow in its original layout (Images/ + SemanticLabels/*.mat)."""

    def __init__(self, root: str | PathLike, split: str = "trainval", *,
                 ids: Sequence[str] | None = None,
                 transforms: Transforms | None = None) -> None:
        root = Path(root)
        image_dir, label_dir = root / "Images" / _SUBDIR, root / "SemanticLabels" / _SUBDIR
        if ids is None:
            ids = self._split_ids(root, image_dir, split)
        ids, images, labels = pair_files(image_dir, label_dir, ids, label_suffixes=(".mat",))
        self.root, self.split = root, split
        table = np.full(len(SIFTFLOW_CLASSES) + 1, IGNORE_INDEX, dtype=np.uint8)
        table[1:] = np.arange(len(SIFTFLOW_CLASSES), dtype=np.uint8)
        self._table = table
        super().__init__(ids=ids, image_paths=images, label_paths=labels,
                         classes=SIFTFLOW_CLASSES, palette=voc_palette(len(SIFTFLOW_CLASSES)),
                         transforms=transforms, source=f"{root} [{split}]")

    @staticmethod
    def _split_ids(root: Path, image_dir: Path, split: str) -> list[str] | None:
        if (root / f"{split}.txt").is_file():
            ids = read_id_list(root / f"{split}.txt")
            if not ids:
                raise DataError(f"{root / f'{split}.txt'}: the split list is empty")
            return ids
        if split == "all":
            return None  # every image
        test_list = root / "TestSet1.txt"
        if test_list.is_file() and split in ("test", *_TRAINVAL_NAMES):
            test = [_stem(line) for line in read_id_list(test_list)]
            if split == "test":
                return test
            if not image_dir.is_dir():
                raise DataError(f"{image_dir}: no such directory")
            held_out = set(test)
            return sorted(p.stem for p in image_dir.iterdir()
                          if p.suffix.lower() == ".jpg" and p.stem not in held_out)
        raise DataError(f"{root}: no id list for split {split!r} (need {split}.txt, or "
                        "TestSet1.txt for test/trainval, or split 'all')")

    def read_label(self, index: int) -> np.ndarray:
        path = self.label_path(index)
        return map_label_values(read_mat_array(path, "S"), self._table, path, what="S")


def siftflow_dataset(root: str | PathLike, split: str = "trainval", *,
                     ids: Sequence[str] | None = None,
                     transforms: Transforms | None = None) -> SegmentationDataset:
    """SiftFlow from either layout: the common one if ``root`` has it, else the original."""
    if is_folder_layout(root):
        return SegmentationFolder(root, split, ids=ids, transforms=transforms)
    return SiftFlow(root, split, ids=ids, transforms=transforms)
