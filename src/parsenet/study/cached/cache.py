"""A disk cache of a frozen trunk's tap features for every image of a split.

Layout under ``<root>/<key>/``: one fp16 numpy memmap per tap (``<tap>.f16``, N x C x h x w),
``train_labels.u8`` (N x H x W: the labels at the trunk's input resolution, nearest),
``labels.u8`` + ``label_shapes.json`` (every label at its own full resolution, flat, for
evaluation), ``meta.json`` (the key's ingredients, shapes, ``done`` and ``complete``).

The key hashes everything that changes a feature: the trunk's identity (the caller's
``trunk_id``, e.g. the weights' sha256 and the layers kept), the dataset root and the
split's ids, the input resolution, the preprocessing and the taps. Resumable: ``done``
counts images whose rows were flushed to disk before ``meta.json`` said so; a cache
interrupted at any point is finished from ``done`` on (rows past it are recomputed, never
trusted), and a cache is only read once ``complete`` is true.

fp16 on disk: HED's features reach a few thousand (conv5, fc7) and fp16 holds up to 65504
with 11 significant bits - a relative error of 5e-4, far below what training notices.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from parsenet.data.transforms import resize_bilinear, resize_nearest
from parsenet.errors import DataError
from parsenet.preprocessing import Preprocessing

__all__ = ["TapCache", "cache_key", "build_cache", "open_cache"]

FLUSH_EVERY = 32  # images between flushes of the memmaps and of meta.json's ``done``


def cache_key(ingredients: dict[str, Any]) -> str:
    """A short stable hash of the JSON of ``ingredients``."""
    text = json.dumps(ingredients, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TapCache:
    """A finished cache, opened read-only."""

    path: Path
    meta: dict[str, Any]
    taps: dict[str, np.memmap]
    train_labels: np.memmap
    labels: np.memmap
    label_offsets: list[int]
    label_shapes: list[tuple[int, int]]

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def tap_names(self) -> tuple[str, ...]:
        return tuple(self.meta["taps"])

    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self.meta["resolution"])

    def features(self, index: int | Sequence[int]) -> dict[str, Tensor]:
        """fp32 tap tensors of one index (C x h x w) or a list of indices (N x C x h x w)."""
        return {t: torch.from_numpy(np.asarray(m[index], dtype=np.float32))
                for t, m in self.taps.items()}

    def train_label(self, index: int | Sequence[int]) -> Tensor:
        return torch.from_numpy(np.asarray(self.train_labels[index], dtype=np.int64))

    def full_label(self, index: int) -> Tensor:
        h, w = self.label_shapes[index]
        start = self.label_offsets[index]
        flat = np.asarray(self.labels[start:start + h * w], dtype=np.int64)
        return torch.from_numpy(flat.reshape(h, w))


def _open_maps(path: Path, meta: dict[str, Any], mode: str) -> dict[str, np.memmap]:
    n = meta["count"]
    return {t: np.memmap(path / f"{t}.f16", dtype=np.float16, mode=mode,
                         shape=(n, *meta["tap_shapes"][t]))
            for t in meta["taps"]}


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    tmp = path / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path / "meta.json")  # atomic: a kill never leaves half a meta.json


def open_cache(path: str | os.PathLike) -> TapCache:
    """A finished cache at ``path``; an unfinished or missing one is a :class:`DataError`."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise DataError(f"{path}: no feature cache here (meta.json missing)")
    meta = json.loads(meta_file.read_text())
    if not meta.get("complete"):
        raise DataError(f"{path}: feature cache unfinished ({meta.get('done', 0)} of "
                        f"{meta['count']} images); build_cache finishes it")
    shapes = [tuple(s) for s in json.loads((path / "label_shapes.json").read_text())]
    offsets = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])]).tolist()
    h, w = meta["resolution"]
    train_labels = np.memmap(path / "train_labels.u8", dtype=np.uint8, mode="r",
                             shape=(meta["count"], h, w))
    labels = np.memmap(path / "labels.u8", dtype=np.uint8, mode="r", shape=(offsets[-1],))
    return TapCache(path, meta, _open_maps(path, meta, "r"), train_labels, labels,
                    offsets[:-1], shapes)


def _label_shapes(dataset: Any, path: Path) -> list[tuple[int, int]]:
    """Every label's (H, W), read once and kept (the flat label file is laid out by it)."""
    file = path / "label_shapes.json"
    if file.is_file():
        return [tuple(s) for s in json.loads(file.read_text())]
    shapes = [tuple(dataset.read_label(i).shape) for i in range(len(dataset))]
    file.write_text(json.dumps(shapes))
    return shapes


def build_cache(
    trunk: nn.Module,
    dataset: Any,
    *,
    root: str | os.PathLike,
    trunk_id: str,
    resolution: tuple[int, int],
    preprocessing: Preprocessing,
    dataset_id: str,
    batch_size: int = 4,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TapCache:
    """Compute (or finish) and open the cache of ``trunk``'s taps over ``dataset``.

    ``dataset`` yields raw ``(uint8 image 3 x H x W, uint8 label H x W)`` and has
    ``read_label(i)`` (our :class:`~parsenet.data.dataset.SegmentationDataset`).
    ``trunk(x)`` maps N x 3 x h x w (preprocessed, resized to ``resolution``) to a dict of
    tap tensors on one grid; it runs in fp32 under ``torch.no_grad``. ``dataset_id`` names
    the data and split (e.g. root, split and a hash of the ids).
    """
    h, w = int(resolution[0]), int(resolution[1])
    trunk = trunk.eval()
    with torch.no_grad():
        probe = trunk(preprocessing(resize_bilinear(dataset[0][0], h, w))[None])
    tap_shapes = {t: list(v.shape[1:]) for t, v in probe.items()}
    ingredients = {"trunk": trunk_id, "data": dataset_id, "count": len(dataset),
                   "resolution": [h, w], "preprocessing": preprocessing.to_dict(),
                   "taps": tap_shapes, "storage": "float16"}
    # As meta.json holds them (tuples become lists), so that a stored cache compares equal.
    ingredients = json.loads(json.dumps(ingredients, default=str))
    path = Path(root) / cache_key(ingredients)
    path.mkdir(parents=True, exist_ok=True)
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    if meta is None or meta.get("ingredients") != ingredients:
        meta = {"ingredients": ingredients, "count": len(dataset), "taps": list(tap_shapes),
                "tap_shapes": tap_shapes, "resolution": [h, w],
                "output_stride": getattr(trunk, "output_stride", None),
                "grid_offset": getattr(trunk, "grid_offset", None), "done": 0,
                "complete": False}
    if meta["complete"]:
        return open_cache(path)
    _fill(trunk, dataset, path, meta, preprocessing, batch_size, progress, log)
    return open_cache(path)


def _fill(trunk: nn.Module, dataset: Any, path: Path, meta: dict[str, Any],
          preprocessing: Preprocessing, batch_size: int, progress: bool,
          log: Callable[[str], None] | None) -> None:
    n, (h, w) = meta["count"], meta["resolution"]
    shapes = _label_shapes(dataset, path)
    offsets = np.concatenate([[0], np.cumsum([a * b for a, b in shapes])])
    first = meta["done"]
    mode = "r+" if first > 0 and (path / f"{meta['taps'][0]}.f16").is_file() else "w+"
    if mode == "w+":
        first = meta["done"] = 0
    maps = _open_maps(path, meta, mode)
    train_labels = np.memmap(path / "train_labels.u8", dtype=np.uint8, mode=mode,
                             shape=(n, h, w))
    labels = np.memmap(path / "labels.u8", dtype=np.uint8, mode=mode, shape=(int(offsets[-1]),))
    if log is not None:
        log(f"feature cache {path}: {first}/{n} done, computing the rest")
    bar = tqdm(total=n, initial=first, desc=f"cache {path.name}", disable=not progress)
    for start in range(first, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        images, masks = [], []
        for i in idx:
            image, mask = dataset[i]
            labels[offsets[i]:offsets[i + 1]] = np.asarray(mask).reshape(-1)
            images.append(preprocessing(resize_bilinear(image, h, w)))
            masks.append(resize_nearest(torch.as_tensor(mask), h, w))
        with torch.no_grad():
            taps = trunk(torch.stack(images))
        for t, m in maps.items():
            m[idx[0]:idx[-1] + 1] = taps[t].numpy().astype(np.float16)
        train_labels[idx[0]:idx[-1] + 1] = torch.stack(masks).numpy()
        bar.update(len(idx))
        end = idx[-1] + 1
        if end - meta["done"] >= FLUSH_EVERY or end == n:
            for m in (*maps.values(), train_labels, labels):
                m.flush()
            meta["done"] = end  # only after the rows are on disk
            meta["complete"] = end == n
            _write_meta(path, meta)
    bar.close()
