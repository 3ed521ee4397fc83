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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

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


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    from parsenet.data.build import build_dataset
    from parsenet.data.transforms import train_transforms

    section = Section(
        "pipeline",
        f"4. Data pipeline: one worker, {WIDTH}x{HEIGHT} JPEG + PNG "
        f"label, train_transforms crop {CROP}",
    )
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
            for i in range(5):
                dataset[i % len(dataset)]
            item_s: list[float] = []
            start = time.perf_counter()
            while time.perf_counter() - start < settings.loader_seconds:
                t0 = time.perf_counter()
                image, mask = dataset[len(item_s) % len(dataset)]
                item_s.append(time.perf_counter() - t0)
            overall = len(item_s) / (time.perf_counter() - start)
            loader = 1.0 / median(item_s)
        finally:
            torch.set_num_threads(threads)
    train, source = _train_images_per_s(settings, shared)
    single = (
        label_mode in ("L", "P")
        and raw_mask.dim() == 2
        and mask.dim() == 2
        and tuple(mask.shape) == (CROP, CROP)
        and tuple(image.shape) == (3, CROP, CROP)
    )
    section.details = {
        "loader_images_per_s": loader,
        "loader_images_per_s_overall": overall,
        "items_timed": len(item_s),
        "train_images_per_s": train,
        "train_step_from": source,
        "train_size": settings.size,
        "label_on_disk": label_mode,
        "label_from_dataset": [str(raw_mask.dtype), list(raw_mask.shape)],
        "label_after_transforms": [str(mask.dtype), list(mask.shape)],
        "image_after_transforms": [str(image.dtype), list(image.shape)],
    }
    section.add_goal(
        "one worker, images/s (1 / median item time)",
        loader,
        ">=",
        200,
        fmt="{:.0f}",
        note=f"items / elapsed: {overall:.0f}",
    )
    section.add(
        f"train step (ParseNet, 1x3x{settings.size}^2), images/s", train, "{:.2f}", note=source
    )
    section.add_goal(
        "loader / train step images/s (not the bottleneck)", loader / train, ">=", 1, fmt="{:.0f}"
    )
    section.add(
        "labels single-channel end to end",
        f"{label_mode} PNG -> {raw_mask.dtype} {tuple(raw_mask.shape)} -> "
        f"{mask.dtype} {tuple(mask.shape)}",
        goal="HxW throughout",
        met=single,
    )
    return [section]
