"""The dataset base class every reader shares, and helpers to pair image and label files."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from parsenet.data.decode import (
    check_label_values,
    image_orientation,
    read_image,
    read_label_png,
)
from parsenet.data.errors import DataError
from parsenet.data.image_safety import DEFAULT_MAX_PIXELS
from parsenet.data.palette import as_palette
from parsenet.labels import IGNORE_INDEX

__all__ = ["SegmentationDataset", "read_id_list", "read_text_file", "pair_files", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
Transforms = Callable[[Any, Any], tuple[Any, Any]]


def read_text_file(path: Path, what: str) -> str:
    """A dataset's text file (``what``: "id list", "class list", ...), as UTF-8.

    Unreadable or not UTF-8 is a :class:`DataError` naming the file: a list saved in another
    encoding would otherwise be a bare UnicodeDecodeError that names nothing.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: {what} is not UTF-8 text (byte {data[e.start]:#04x} on line "
                        f"{line}); save it as UTF-8") from None


def read_id_list(path: Path) -> list[str]:
    """Ids listed one per line (blank lines and surrounding spaces ignored)."""
    lines = read_text_file(path, "id list").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such directory")
    found: dict[str, Path] = {}
    for entry in folder.iterdir():
        if entry.suffix.lower() not in suffixes or not entry.is_file():
            continue
        if entry.stem in found:
            raise DataError(f"{folder}: two files for id {entry.stem!r}: "
                            f"{found[entry.stem].name} and {entry.name}")
        found[entry.stem] = entry
    return found


def _names(items: Iterable[str], limit: int = 5) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def pair_files(image_dir: Path, label_dir: Path, ids: Sequence[str] | None, *,
               label_suffixes: Sequence[str] = (".png",),
               image_suffixes: Sequence[str] = IMAGE_SUFFIXES
               ) -> tuple[list[str], list[Path], list[Path]]:
    """Match images and labels by file stem.

    With ``ids`` (a split list), every listed id needs both files. Without, the ids are the
    sorted image stems and every image needs a label and every label an image. Missing
    partners are a ``DataError`` naming them.
    """
    images = _files_by_stem(image_dir, image_suffixes)
    labels = _files_by_stem(label_dir, label_suffixes)
    if ids is None:
        ids = sorted(images)
        orphans = set(labels) - set(images)
        if orphans:
            raise DataError(f"{label_dir}: label(s) without an image in {image_dir}: "
                            f"{_names(labels[stem].name for stem in orphans)}")
    no_image = [i for i in ids if i not in images]
    if no_image:
        raise DataError(f"{image_dir}: no image for id(s) {_names(no_image)}")
    no_label = [i for i in ids if i not in labels]
    if no_label:
        raise DataError(f"{label_dir}: no label for image(s) "
                        f"{_names(images[i].name for i in no_label)}")
    return list(ids), [images[i] for i in ids], [labels[i] for i in ids]


class SegmentationDataset(Dataset):
    """Image/label pairs with class names and a palette.

    Item ``i`` is ``(image, mask)``: without transforms a ``tv_tensors.Image`` (uint8,
    3 x H x W, RGB) and a ``tv_tensors.Mask`` (uint8, H x W, class index per pixel, 255 =
    ignore); with transforms whatever they return for that pair. Subclasses that store labels
    in another format override ``read_label``.
    """

    ignore_index = IGNORE_INDEX
    # Images and labels over this many pixels (from their headers) are refused before they
    # are decoded; the builders set it from data.max_megapixels.
    max_pixels = DEFAULT_MAX_PIXELS

    def __init__(self, *, ids: Sequence[str], image_paths: Sequence[Path],
                 label_paths: Sequence[Path], classes: Sequence[str],
                 palette: np.ndarray | Sequence[Sequence[int]] | None = None,
                 transforms: Transforms | None = None, source: str = "dataset") -> None:
        if not len(ids) == len(image_paths) == len(label_paths):
            raise ValueError("ids, image_paths and label_paths must have equal lengths")
        if len(ids) == 0:
            raise DataError(f"{source}: the split is empty (no image/label pairs)")
        if not classes:
            raise DataError(f"{source}: no class names")
        if len(classes) > 255:
            raise DataError(f"{source}: {len(classes)} classes; at most 255 fit uint8 labels "
                            "with 255 = ignore")
        self.ids = list(ids)
        self._image_paths = [Path(p) for p in image_paths]
        self._label_paths = [Path(p) for p in label_paths]
        self.classes = [str(c) for c in classes]
        self.palette = as_palette(palette, len(self.classes), source)
        self.transforms = transforms
        self.source = source

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def select(self, ids: Sequence[str], transforms: Transforms | None) -> SegmentationDataset:
        """The items ``ids`` (in that order) with ``transforms``, without listing the folders
        again (a held-out split is carved from one listing)."""
        index = {id_: i for i, id_ in enumerate(self.ids)}
        missing = [i for i in ids if i not in index]
        if missing:
            raise DataError(f"{self.source}: no item with id {missing[0]!r}")
        subset = copy.copy(self)
        subset.ids = list(ids)
        subset._image_paths = [self._image_paths[index[i]] for i in ids]
        subset._label_paths = [self._label_paths[index[i]] for i in ids]
        subset.transforms = transforms
        return subset

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return self._image_paths[index]

    def label_path(self, index: int) -> Path:
        return self._label_paths[index]

    def read_label(self, index: int) -> np.ndarray:
        """The label map of item ``index``: uint8 H x W, values in 0..K-1 or 255."""
        path = self._label_paths[index]
        return check_label_values(read_label_png(path, max_pixels=self.max_pixels),
                                  self.num_classes, path)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """Item ``index`` decoded and checked, before transforms."""
        image = read_image(self._image_paths[index], max_pixels=self.max_pixels)
        label = self.read_label(index)
        if tuple(image.shape[-2:]) != label.shape:
            raise DataError(self._size_mismatch(index, image.shape[-1], image.shape[-2],
                                                label.shape))
        if not label.flags.writeable:
            label = label.copy()
        return tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(label))

    def _size_mismatch(self, index: int, width: int, height: int,
                       label_shape: tuple[int, ...]) -> str:
        image_path, label_path = self._image_paths[index], self._label_paths[index]
        message = (f"{image_path}: image is {width}x{height} (WxH) but its label {label_path} "
                   f"is {label_shape[1]}x{label_shape[0]}")
        orientation = image_orientation(image_path)
        if orientation in (5, 6, 7, 8) and (height, width) == label_shape[::-1]:
            # Images are shown as their EXIF orientation says (as viewers and serve do);
            # labels carry none, so a label drawn on the stored pixels no longer fits.
            message += (f": the image's EXIF orientation {orientation} turns it a quarter; "
                        f"the label must be drawn on the image as displayed (or save the "
                        f"image with the rotation applied and the tag removed)")
        return message

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, mask = self.load(index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, {len(self)} items, "
                f"{self.num_classes} classes)")
