"""Section 4: the training input pipeline against the model's train step.

Writes a few 500 x 375 JPEG images (photo-like: smooth colours plus noise, quality 90) with
single-channel PNG labels in the common folder layout, reads them through
``parsenet.data.build.build_dataset`` with ``train_transforms`` (crop 320) and counts
items per second on one thread, as one DataLoader worker runs: 1 / the median time of an
item (a shared machine preempts some items; items / elapsed is reported too). The train
step it is compared with is section 1's ParseNet (late fusion) step, or one timed here if section 1
did not run.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from benchmarks.common import Section, Settings, make_train_step, median

__all__ = ["run", "write_folder_dataset"]

WIDTH, HEIGHT, CROP, NUM_CLASSES = 500, 375, 320, 21


def write_folder_dataset(root: Path, count: int = 8, seed: int = 0) -> None:
    """``count`` JPEG + PNG pairs in the common layout (split "train")."""
    rng = np.random.default_rng(seed)
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"class{k}\n" for k in range(NUM_CLASSES)))
    ids = [f"{i:04d}" for i in range(count)]
    (root / "train.txt").write_text("\n".join(ids) + "\n")
    for name in ids:
        coarse = rng.integers(0, 256, (HEIGHT // 8 + 1, WIDTH // 8 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BICUBIC))
        noisy = np.clip(smooth.astype(np.int16) + rng.integers(-12, 13, smooth.shape), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(
            root / "images" / "train" / f"{name}.jpg", quality=90
        )
        blocks = rng.integers(0, NUM_CLASSES, (HEIGHT // 40 + 1, WIDTH // 40 + 1), dtype=np.uint8)
        label = np.asarray(Image.fromarray(blocks).resize((WIDTH, HEIGHT), Image.NEAREST))
        label = label.copy()
        label[:, ::50] = 255  # thin ignore strokes, like VOC's object boundaries
        Image.fromarray(label, mode="L").save(root / "labels" / "train" / f"{name}.png")


def _train_images_per_s(settings: Settings, shared: dict[str, Any]) -> tuple[float, str]:
    if "train_images_per_s" in shared:
        return shared["train_images_per_s"], "section 1"
    from benchmarks.roofline import NUM_CLASSES as K
    from benchmarks.roofline import builders

    model = builders(settings.width)["late"]()
    step = make_train_step(model, torch.randn(1, 3, settings.size, settings.size), K)
    step()
    times = []
    for _ in range(settings.min_rounds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1.0 / median(times), "timed here"


@dataclass
class _LoaderRun:
    """What one worker's loading showed: the label at each stage, and its item rate."""

    label_mode: str  # the PNG's mode on disk
    raw_mask: Tensor  # the first label as the dataset reads it, before transforms
    image: Tensor  # the last item timed, after the transforms
    mask: Tensor
    items_timed: int
    overall: float  # items / elapsed seconds
    loader: float  # 1 / the median item's seconds


def _time_items(dataset: Any, seconds: float) -> tuple[Tensor, Tensor, list[float], float]:
    """(last image, last mask, seconds of each item, items / elapsed) of reading items
    for ``seconds`` after a few untimed ones."""
    for i in range(5):
        dataset[i % len(dataset)]
    item_s: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        image, mask = dataset[len(item_s) % len(dataset)]
        item_s.append(time.perf_counter() - t0)
    overall = len(item_s) / (time.perf_counter() - start)
    return image, mask, item_s, overall


def _time_loader(settings: Settings) -> _LoaderRun:
    """Writes the images, reads them through the dataset with the train transforms and
    times the items on one thread."""
    from parsenet.data.build import build_dataset
    from parsenet.data.transforms import train_transforms

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder_dataset(root)
        label_mode = Image.open(root / "labels" / "train" / "0000.png").mode
        raw = build_dataset(root, "train", format="folder")
        _, raw_mask = raw[0]
        # the config's default augmentation: scale 0.5-2, flip, no colour jitter
        dataset = build_dataset(root, "train", format="folder",
                                transforms=train_transforms(CROP))
        torch.set_num_threads(1)  # what a DataLoader worker runs with
        try:
            image, mask, item_s, overall = _time_items(dataset, settings.loader_seconds)
        finally:
            torch.set_num_threads(threads)
    return _LoaderRun(label_mode, raw_mask, image, mask, len(item_s), overall,
                      1.0 / median(item_s))


def _details(r: _LoaderRun, train: float, source: str, size: int) -> dict[str, Any]:
    return {
        "loader_images_per_s": r.loader,
        "loader_images_per_s_overall": r.overall,
        "items_timed": r.items_timed,
        "train_images_per_s": train,
        "train_step_from": source,
        "train_size": size,
        "label_on_disk": r.label_mode,
        "label_from_dataset": [str(r.raw_mask.dtype), list(r.raw_mask.shape)],
        "label_after_transforms": [str(r.mask.dtype), list(r.mask.shape)],
        "image_after_transforms": [str(r.image.dtype), list(r.image.shape)],
    }


def _add_rows(section: Section, r: _LoaderRun, train: float, source: str, size: int) -> None:
    section.add_goal(
        "one worker, images/s (1 / median item time)",
        r.loader,
        ">=",
        200,
        fmt="{:.0f}",
        note=f"items / elapsed: {r.overall:.0f}",
    )
    section.add(f"train step (ParseNet, 1x3x{size}^2), images/s", train, "{:.2f}", note=source)
    section.add_goal(
        "loader / train step images/s (not the bottleneck)",
        r.loader / train,
        ">=",
        1,
        fmt="{:.0f}",
    )
    raw_mask, mask, image = r.raw_mask, r.mask, r.image
    single = (
        r.label_mode in ("L", "P")
        and raw_mask.dim() == 2
        and mask.dim() == 2
        and tuple(mask.shape) == (CROP, CROP)
        and tuple(image.shape) == (3, CROP, CROP)
    )
    section.add(
        "labels single-channel end to end",
        f"{r.label_mode} PNG -> {raw_mask.dtype} {tuple(raw_mask.shape)} -> "
        f"{mask.dtype} {tuple(mask.shape)}",
        goal="HxW throughout",
        met=single,
    )


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    """Section 4: one worker's item rate against the train step's."""
    section = Section(
        "pipeline",
        f"4. Data pipeline: one worker, {WIDTH}x{HEIGHT} JPEG + PNG "
        f"label, train_transforms crop {CROP}",
    )
    loaded = _time_loader(settings)
    train, source = _train_images_per_s(settings, shared)
    section.details = _details(loaded, train, source, settings.size)
    _add_rows(section, loaded, train, source, settings.size)
    return [section]
