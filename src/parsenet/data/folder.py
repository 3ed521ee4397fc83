"""The common layout every dataset here can be converted to.

::

    <root>/images/<split>/<id>.jpg|png     the images
    <root>/labels/<split>/<id>.png         uint8 class index per pixel (or a palette PNG),
                                           255 = ignore
    <root>/classes.txt                     one class name per line; line k is class k
    <root>/<split>.txt                     optional: the split's ids, one per line
"""

from __future__ import annotations

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
from parsenet.data.errors import DataError

__all__ = ["SegmentationFolder", "holdout_split", "read_classes", "is_folder_layout"]


def read_classes(path: Path) -> list[str]:
    """Class names from ``classes.txt``: one per line, line k (from 0) naming class k.

    Blank lines at the end are ignored; a blank line before a name is an error, because
    skipping it would silently give every later class the id of the one before it.
    """
    if not path.is_file():
        raise DataError(f"{path}: classes.txt not found (one class name per line)")
    lines = [line.strip() for line in read_text_file(path, "class list").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if "" in lines:
        number = lines.index("") + 1
        raise DataError(f"{path}: line {number} is blank (each line names one class, in id "
                        f"order: remove the line or name the class)")
    names = lines
    if not names:
        raise DataError(f"{path}: no class names in classes.txt")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate class name(s) {duplicates}")
    return names


def is_folder_layout(root: str | PathLike) -> bool:
    """Whether ``root`` looks like the common layout (classes.txt and images/)."""
    root = Path(root)
    return (root / "classes.txt").is_file() and (root / "images").is_dir()


def holdout_split(ids: Sequence[str], every: int) -> tuple[list[str], list[str]]:
    """Carve a validation set out of one split: ``(train_ids, val_ids)``.

    The ids are sorted; the id at position ``k`` goes to validation when
    ``k % every == 0`` and to training otherwise. So ``every=10`` holds out a tenth,
    starting with the first sorted id, and the result depends only on the set of ids.
    """
    if every < 2:
        raise ValueError(f"holdout every must be >= 2 (got {every}); 1 would leave no training ids")
    ordered = sorted(ids)
    val = [i for k, i in enumerate(ordered) if k % every == 0]
    train = [i for k, i in enumerate(ordered) if k % every != 0]
    return train, val


class SegmentationFolder(SegmentationDataset):
    """A split of a dataset in the common layout (see the module docstring).

    Ids come from ``ids`` if given, else from ``<root>/<split>.txt`` if present, else they
    are the image stems found in ``images/<split>``. Class names come from classes.txt; the
    palette is ``palette`` or VOC's colormap.
    """

    def __init__(self, root: str | PathLike, split: str = "train", *,
                 ids: Sequence[str] | None = None, transforms: Transforms | None = None,
                 palette: np.ndarray | Sequence[Sequence[int]] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: dataset folder not found")
        classes = read_classes(root / "classes.txt")
        image_dir, label_dir = root / "images" / split, root / "labels" / split
        if ids is None and (root / f"{split}.txt").is_file():
            ids = read_id_list(root / f"{split}.txt")
            if not ids:
                raise DataError(f"{root / f'{split}.txt'}: the split list is empty")
        ids, images, labels = pair_files(image_dir, label_dir, ids)
        if not ids:
            raise DataError(f"{image_dir}: split {split!r} has no images")
        self.root, self.split = root, split
        super().__init__(ids=ids, image_paths=images, label_paths=labels, classes=classes,
                         palette=palette, transforms=transforms, source=f"{root} [{split}]")
