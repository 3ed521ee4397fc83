"""One entry point from a ``DataConfig`` to a dataset: ``build_dataset(cfg, "train")``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from parsenet.config import ConfigError, DataConfig
from parsenet.data.camvid import camvid_dataset
from parsenet.data.context import PascalContext
from parsenet.data.dataset import SegmentationDataset, Transforms
from parsenet.data.folder import SegmentationFolder, holdout_split
from parsenet.data.siftflow import siftflow_dataset
from parsenet.data.transforms import eval_transforms, train_transforms
from parsenet.data.voc import VOCSegmentation
from parsenet.preprocessing import Preprocessing

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


def _reader_and_root(cfg: DataConfig) -> tuple[Callable[..., SegmentationDataset], Path, dict]:
    reader = FORMATS.get(cfg.format)
    if reader is None:
        raise ConfigError(f"data.format {cfg.format!r} unknown; expected one of "
                          f"{sorted(FORMATS)}")
    root = Path(cfg.root)
    extra: dict = {}
    if cfg.format == "synthetic":
        # Imported here: generation is only needed for this format.
        from parsenet.data.synthetic import PALETTE, ensure_dataset

        root = Path(ensure_dataset(cfg.root, **dict(cfg.synthetic)))
        extra["palette"] = PALETTE
    return _limited(reader, round(cfg.max_megapixels * 1e6)), root, extra


def _limited(reader: Callable[..., SegmentationDataset], max_pixels: int
             ) -> Callable[..., SegmentationDataset]:
    """``reader`` whose datasets refuse images over ``max_pixels`` (data.max_megapixels)."""
    def read(*args: Any, **kwargs: Any) -> SegmentationDataset:
        dataset = reader(*args, **kwargs)
        dataset.max_pixels = max_pixels
        return dataset
    return read


def build_datasets(cfg: DataConfig, preprocessing: Preprocessing, with_valid: bool = False
                   ) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """``(train, val)`` as :func:`build_dataset` builds them (val None without
    ``cfg.val_split``), listing each split's folders once: with ``cfg.holdout_every`` both
    are carved from one listing of the split."""
    if not cfg.holdout_every:
        val = (build_dataset(cfg, "val", preprocessing=preprocessing) if cfg.val_split
               else None)
        return build_dataset(cfg, "train", preprocessing=preprocessing,
                             with_valid=with_valid), val
    reader, root, extra = _reader_and_root(cfg)
    listed = {name: reader(root, name, **extra)
              for name in dict.fromkeys(filter(None, (cfg.train_split, cfg.val_split)))}
    train_ids, _ = holdout_split(listed[cfg.train_split].ids, cfg.holdout_every)
    train = listed[cfg.train_split].select(train_ids, train_transforms(
        cfg.crop_size, tuple(cfg.scale_range), cfg.flip, cfg.color_jitter, preprocessing,
        with_valid, cfg.resize))
    if not cfg.val_split:
        return train, None
    _, val_ids = holdout_split(listed[cfg.val_split].ids, cfg.holdout_every)
    return train, listed[cfg.val_split].select(val_ids, eval_transforms(preprocessing,
                                                                        cfg.resize))


def build_dataset(cfg: DataConfig, split: str, transforms: Transforms | None = None,
                  preprocessing: Preprocessing | None = None,
                  with_valid: bool = False) -> SegmentationDataset:
    """The ``split`` ("train" or "val") of the dataset ``cfg`` describes.

    ``split`` maps to ``cfg.train_split`` / ``cfg.val_split``. With ``cfg.holdout_every``
    > 0, "train" is the ids of ``cfg.train_split`` that are not held out and "val" the
    held-out ids of ``cfg.val_split`` (see ``holdout_split``). Without ``transforms`` but
    with ``preprocessing``, "train" gets ``train_transforms`` from cfg's crop/scale/flip/
    jitter and "val" gets ``eval_transforms``; with neither, items are raw uint8 pairs.
    ``with_valid``: "train" items are ``(image, mask, valid)``, ``valid`` true on the
    image's own pixels (false on crop padding), for pool6 to leave padding out.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    reader, root, extra = _reader_and_root(cfg)
    if transforms is None and preprocessing is not None:
        if split == "train":
            transforms = train_transforms(cfg.crop_size, tuple(cfg.scale_range), cfg.flip,
                                          cfg.color_jitter, preprocessing, with_valid,
                                          cfg.resize)
        else:
            transforms = eval_transforms(preprocessing, cfg.resize)
    split_name = cfg.train_split if split == "train" else cfg.val_split
    ids = None
    if cfg.holdout_every:
        if cfg.holdout_every < 2:
            raise ConfigError(f"data.holdout_every must be 0 (off) or >= 2, got "
                              f"{cfg.holdout_every}")
        train_ids, val_ids = holdout_split(reader(root, split_name).ids, cfg.holdout_every)
        ids = train_ids if split == "train" else val_ids
    return reader(root, split_name, ids=ids, transforms=transforms, **extra)
