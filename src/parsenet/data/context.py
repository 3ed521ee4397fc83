"""PASCAL-Context (Mottaghi et al. 2014) with the 59 most frequent classes + background.

Source: the full annotations are distributed as ``trainval.tar.gz`` from the dataset page
(https://cs.stanford.edu/~roozbeh/pascal-context/): one ``trainval/<id>.mat`` per image
with a ``LabelMap`` of 459-class ids (0 = unlabelled, ``labels.txt`` names them as
``<id>: <name>``). The images are PASCAL VOC 2010's JPEGImages. The ``trainval_merged.json``
+ Detail API route gives the same 59 classes but needs that API, so it is not read here.

Layout::

    <root>/JPEGImages/<id>.jpg        (or <root>/VOCdevkit/VOC2010/JPEGImages)
    <root>/trainval/<id>.mat          LabelMap, 459-class ids
    <root>/labels.txt                 optional; if present its names are checked
    <root>/{train,val}.txt            the split's ids (or VOC2010's ImageSets/Main lists,
                                      4,998 train / 5,105 val)

Labels as in the ParseNet paper: 60 labels, 0 = background (every pixel whose class is not
one of the 59, unlabelled pixels included) and 1..59 the classes in alphabetical order.
Background is a class (trained and evaluated), so no pixel is ignored. The 459 -> 59 id
list is the one every public converter uses (the Detail API's, also mmsegmentation's).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from parsenet.data.dataset import (
    SegmentationDataset,
    Transforms,
    pair_files,
    read_id_list,
    read_text_file,
)
from parsenet.data.decode import map_label_values, read_mat_array
from parsenet.data.errors import DataError
from parsenet.data.palette import voc_palette

__all__ = ["PascalContext", "CONTEXT_CLASSES", "CONTEXT_459_IDS", "context_label_table"]

CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)
# The id of each class above in the 459-class labels.txt (0: background / unlabelled).
CONTEXT_459_IDS = (
    0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105,
    113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
    324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454,
    458,
)
NUM_FULL_CLASSES = 459


def context_label_table() -> np.ndarray:
    """459-class id (0..459) -> 60-class label (0 = background) as a uint8 lookup table."""
    table = np.zeros(NUM_FULL_CLASSES + 1, dtype=np.uint8)
    table[list(CONTEXT_459_IDS)] = np.arange(len(CONTEXT_459_IDS), dtype=np.uint8)
    return table


def _check_labels_txt(path: Path) -> None:
    """labels.txt, if shipped, must name the 59 classes at the ids used here."""
    names: dict[int, str] = {}
    for line in read_text_file(path, "labels.txt").splitlines():
        match = re.match(r"\s*(\d+)\s*:\s*(.+?)\s*$", line)
        if match:
            names[int(match.group(1))] = match.group(2)
    def canonical(name: str | None) -> str:
        return (name or "").replace(" ", "").lower()

    wrong = [f"{i}: {names.get(i)!r} (expected {name!r})"
             for i, name in zip(CONTEXT_459_IDS[1:], CONTEXT_CLASSES[1:], strict=True)
             if canonical(names.get(i)) != name]
    if wrong:
        raise DataError(f"{path}: does not match the 59-class mapping: {', '.join(wrong[:3])}")


class PascalContext(SegmentationDataset):
    """PASCAL-Context, 60 labels (background + 59 classes), from the 459-class .mat files."""

    def __init__(self, root: str | PathLike, split: str = "train", *,
                 ids: Sequence[str] | None = None,
                 transforms: Transforms | None = None) -> None:
        root = Path(root)
        image_dir = next((d for d in (root / "JPEGImages",
                                      root / "VOCdevkit" / "VOC2010" / "JPEGImages")
                          if d.is_dir()), root / "JPEGImages")
        label_dir = root / "trainval"
        if (root / "labels.txt").is_file():
            _check_labels_txt(root / "labels.txt")
        if ids is None:
            lists = [root / f"{split}.txt",
                     root / "VOCdevkit" / "VOC2010" / "ImageSets" / "Main" / f"{split}.txt"]
            found = next((p for p in lists if p.is_file()), None)
            if found is None:
                raise DataError(f"{root}: no id list for split {split!r} (looked for "
                                f"{' and '.join(str(p) for p in lists)})")
            ids = read_id_list(found)
            if not ids:
                raise DataError(f"{found}: the split list is empty")
        ids, images, labels = pair_files(image_dir, label_dir, ids, label_suffixes=(".mat",))
        self.root, self.split = root, split
        self._table = context_label_table()
        super().__init__(ids=ids, image_paths=images, label_paths=labels,
                         classes=CONTEXT_CLASSES, palette=voc_palette(len(CONTEXT_CLASSES)),
                         transforms=transforms, source=f"{root} [{split}]")

    def read_label(self, index: int) -> np.ndarray:
        path = self.label_path(index)
        raw = read_mat_array(path, "LabelMap")
        return map_label_values(raw, self._table, path, what="LabelMap")
