"""One entry point from a dataset's description to a dataset, in plain keyword arguments:

    train = build_dataset("data/siftflow", "trainval", format="siftflow", holdout_every=10,
                          transforms=train_transforms(320, (0.5, 2.0), True, 0.0, CAFFE_VGG))

:func:`parsenet.recipe.datasets_from_config` turns a config's ``data`` section into these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from parsenet.data.camvid import camvid_dataset
from parsenet.data.context import PascalContext
from parsenet.data.dataset import SegmentationDataset, Transforms
from parsenet.data.folder import SegmentationFolder, holdout_split
from parsenet.data.image_safety import DEFAULT_MAX_PIXELS
from parsenet.data.siftflow import siftflow_dataset
from parsenet.data.voc import VOCSegmentation

__all__ = ["build_dataset", "build_datasets", "FORMATS"]


# format -> reader(root, split, *, ids=None, transforms=None)
FORMATS: dict[str, Callable[..., SegmentationDataset]] = {
    "folder": SegmentationFolder,
    "voc": VOCSegmentation,
    "context": PascalContext,
    "siftflow": siftflow_dataset,
    "camvid": camvid_dataset,
    "synthetic": SegmentationFolder,  # generated first, then read as a folder
}


def _reader(root: str | os.PathLike, format: str, max_pixels: int,
            synthetic: Mapping[str, Any] | None
            ) -> tuple[Callable[..., SegmentationDataset], Path, dict[str, Any]]:
    """The format's reader (its datasets refuse images over ``max_pixels``), the root to
    read and the reader's extra keyword arguments."""
    reader = FORMATS.get(format)
    if reader is None:
        raise ValueError(f"format {format!r} unknown; expected one of {sorted(FORMATS)}")
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be > 0, got {max_pixels}")
    extra: dict[str, Any] = {}
    if format == "synthetic":
        # Imported here: generation is only needed for this format.
        from parsenet.data.synthetic import PALETTE, ensure_dataset

        root = ensure_dataset(root, **dict(synthetic or {}))
        extra["palette"] = PALETTE
    return _limited(reader, max_pixels), Path(root), extra


def _limited(reader: Callable[..., SegmentationDataset], max_pixels: int
             ) -> Callable[..., SegmentationDataset]:
    """``reader`` whose datasets refuse images over ``max_pixels``."""
    def read(*args: Any, **kwargs: Any) -> SegmentationDataset:
        dataset = reader(*args, **kwargs)
        dataset.max_pixels = max_pixels
        return dataset
    return read


def _check_holdout(holdout_every: int) -> None:
    if holdout_every == 1 or holdout_every < 0:
        raise ValueError(f"holdout_every must be 0 (off) or >= 2, got {holdout_every}")


def build_dataset(root: str | os.PathLike, split: str, *, format: str = "folder",
                  holdout_every: int = 0, held_out: bool = False,
                  transforms: Transforms | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS,
                  synthetic: Mapping[str, Any] | None = None) -> SegmentationDataset:
    """The split ``split`` of the dataset of ``format`` (a key of :data:`FORMATS`) in
    ``root``; without ``transforms`` its items are raw uint8 ``(image, mask)`` pairs.
    Images and labels over ``max_pixels`` are refused from their header, before decoding.

    ``holdout_every`` > 0 carves a validation set out of the split (see
    :func:`~parsenet.data.folder.holdout_split`): the dataset is the ids kept for training,
    or with ``held_out`` the held-out ones. ``synthetic``: the generator's arguments for the
    "synthetic" format, which is generated into ``root`` when absent.
    """
    _check_holdout(holdout_every)
    reader, path, extra = _reader(root, format, max_pixels, synthetic)
    ids = None
    if holdout_every:
        kept, held = holdout_split(reader(path, split, **extra).ids, holdout_every)
        ids = held if held_out else kept
    elif held_out:
        raise ValueError("held_out needs holdout_every >= 2")
    return reader(path, split, ids=ids, transforms=transforms, **extra)


def build_datasets(root: str | os.PathLike, *, format: str = "folder",
                   train_split: str = "train", val_split: str | None = "val",
                   holdout_every: int = 0, train_transforms: Transforms | None = None,
                   val_transforms: Transforms | None = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS,
                   synthetic: Mapping[str, Any] | None = None
                   ) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """``(train, val)`` as two :func:`build_dataset` calls build them (val None without
    ``val_split``), listing each split's folders once: with ``holdout_every`` both are
    carved from one listing of the split."""
    source = dict(format=format, max_pixels=max_pixels, synthetic=synthetic)
    if not holdout_every:
        train = build_dataset(root, train_split, transforms=train_transforms, **source)
        val = (build_dataset(root, val_split, transforms=val_transforms, **source)
               if val_split else None)
        return train, val
    _check_holdout(holdout_every)
    reader, path, extra = _reader(root, format, max_pixels, synthetic)
    listed = {name: reader(path, name, **extra)
              for name in dict.fromkeys(filter(None, (train_split, val_split)))}
    kept, _ = holdout_split(listed[train_split].ids, holdout_every)
    train = listed[train_split].select(kept, train_transforms)
    if not val_split:
        return train, None
    _, held = holdout_split(listed[val_split].ids, holdout_every)
    return train, listed[val_split].select(held, val_transforms)
