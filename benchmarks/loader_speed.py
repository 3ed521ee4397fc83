"""Measure the training input pipeline: images per second for one worker.

    python -m benchmarks.loader_speed [--size 500x375] [--crop 320] [--seconds 5] [--baseline]

Writes a synthetic JPEG + label PNG pair (smooth colours, 21 classes) to a temporary
folder and times decode + checks + ``train_transforms`` per item, single-threaded (torch
and OpenCV both limited to one thread, as in one DataLoader worker). Not a test: the figure
depends on the machine and on what else runs on it, so ``--baseline`` also times a plain
torchvision v2 pipeline (decode, RandomResize, pad, RandomCrop, flip, ToDtype + Normalize)
on the same pair for a same-machine comparison: what our own two steps (RandomScale,
PadToSize) and the one-pass normalisation cost or save against stock v2. Section 4 of
``python -m benchmarks`` compares the same pipeline with the train step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from parsenet.data.dataset import SegmentationDataset
from parsenet.data.transforms import train_transforms

__all__ = ["write_sample_pair", "measure", "measure_baseline", "Rates"]


def write_sample_pair(folder: Path, width: int, height: int, seed: int = 0) -> tuple[Path, Path]:
    """A photo-like JPEG (smooth colours plus noise, quality 90) and a blocky label PNG."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
    noisy = np.clip(smooth.astype(np.int16) + rng.integers(-12, 13, smooth.shape), 0, 255)
    image_path, label_path = folder / "sample.jpg", folder / "sample.png"
    Image.fromarray(noisy.astype(np.uint8)).save(image_path, quality=90)
    blocks = rng.integers(0, 21, (height // 40 + 1, width // 40 + 1), dtype=np.uint8)
    label = np.asarray(Image.fromarray(blocks).resize((width, height), Image.NEAREST)).copy()
    label[:, ::50] = 255  # thin ignore strokes, like VOC's object boundaries
    Image.fromarray(label).save(label_path)
    return image_path, label_path


def _baseline_item(image_path: Path, label_path: Path, pipeline: Any) -> tuple[Any, Any]:
    """What a plain torchvision v2 pipeline does for one item (the comparison)."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg, decode_png, read_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_jpeg(read_file(str(image_path)), mode=ImageReadMode.RGB)
        label = decode_png(read_file(str(label_path)))
    return pipeline(tv_tensors.Image(image), tv_tensors.Mask(label))


def _baseline_pipeline(crop: int, height: int) -> Any:
    import torchvision.transforms.v2 as v2

    from parsenet.preprocessing import IMAGENET

    return v2.Compose([
        v2.RandomResize(int(0.5 * height), int(2.0 * height)),
        v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, "others": 255}),
        v2.RandomHorizontalFlip(),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": torch.int64}, scale=True),
        v2.Normalize(IMAGENET.mean, IMAGENET.std),
    ])


class Rates(NamedTuple):
    """Images per second: over the whole run (wall clock), per CPU-second of this process,
    and in the fastest burst of 10 items (the least disturbed by other processes)."""

    wall: float
    cpu: float
    best_burst: float

    def __str__(self) -> str:
        return (f"{self.wall:.1f} images/s wall-clock, {self.cpu:.1f} per CPU-second, "
                f"{self.best_burst:.1f} in the best 10-image burst")


def _rate(step: Any, seconds: float, burst: int = 10) -> Rates:
    for _ in range(20):  # warm-up
        step()
    count, best = 0, float("inf")
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        burst_start = time.perf_counter()
        for _ in range(burst):
            step()
        best = min(best, time.perf_counter() - burst_start)
        count += burst
    return Rates(count / (time.perf_counter() - start),
                 count / (time.process_time() - cpu_start), burst / best)


def measure_baseline(width: int = 500, height: int = 375, crop: int = 320,
                     seconds: float = 5.0) -> Rates:
    """Like ``measure`` for the plain torchvision v2 pipeline."""
    _single_thread()
    pipeline = _baseline_pipeline(crop, height)
    with tempfile.TemporaryDirectory() as tmp:
        image_path, label_path = write_sample_pair(Path(tmp), width, height)
        return _rate(lambda: _baseline_item(image_path, label_path, pipeline), seconds)


def _single_thread() -> None:
    torch.set_num_threads(1)
    try:  # OpenCV has its own thread pool; one worker means one thread
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def measure(width: int = 500, height: int = 375, crop: int = 320, seconds: float = 5.0
            ) -> Rates:
    """Images per second through decode + label check + training transforms.

    On a shared machine the CPU-second and best-burst rates estimate what one worker does
    on a core of its own better than the wall-clock rate.
    """
    _single_thread()
    with tempfile.TemporaryDirectory() as tmp:
        image_path, label_path = write_sample_pair(Path(tmp), width, height)
        dataset = SegmentationDataset(
            ids=["sample"] * 64, image_paths=[image_path] * 64, label_paths=[label_path] * 64,
            classes=[f"class{k}" for k in range(21)], transforms=train_transforms(crop))
        image, mask = dataset[0]
        assert image.shape == (3, crop, crop) and mask.shape == (crop, crop)
        return _rate(lambda: dataset[0], seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the sample image")
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--baseline", action="store_true",
                        help="also time a plain torchvision v2 pipeline")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"parsenet train pipeline: {measure(width, height, args.crop, args.seconds)} "
          f"(one thread; {width}x{height} JPEG + PNG label, decode + checks + "
          f"train_transforms, crop {args.crop})")
    if args.baseline:
        rates = measure_baseline(width, height, args.crop, args.seconds)
        print(f"plain torchvision v2 pipeline: {rates} (same pair)")


if __name__ == "__main__":
    main()
