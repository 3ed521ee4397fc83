"""Measure the training input pipeline: images per second for one worker.

    python -m parsenet.data.speed [--size 500x375] [--crop 320] [--seconds 5]

Writes a synthetic JPEG + label PNG pair (smooth colours, 21 classes) to a temporary
folder and times decode + checks + ``train_transforms`` per item, single-threaded (torch
and OpenCV both limited to one thread, as in one DataLoader worker). Not a test: the figure
depends on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from parsenet.data.dataset import SegmentationDataset
from parsenet.data.transforms import train_transforms

__all__ = ["write_sample_pair", "measure"]


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


def measure(width: int = 500, height: int = 375, crop: int = 320, seconds: float = 5.0
            ) -> tuple[float, float]:
    """Images per second through decode + label check + training transforms.

    Returns (per wall-clock second, per CPU second of this process). On a shared machine
    the second is the better estimate of what one worker does on a core of its own.
    """
    torch.set_num_threads(1)
    try:  # OpenCV has its own thread pool; one worker means one thread
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        image_path, label_path = write_sample_pair(Path(tmp), width, height)
        dataset = SegmentationDataset(
            ids=["sample"] * 64, image_paths=[image_path] * 64, label_paths=[label_path] * 64,
            classes=[f"class{k}" for k in range(21)], transforms=train_transforms(crop))
        for i in range(20):  # warm-up
            dataset[i % len(dataset)]
        count, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            image, mask = dataset[count % len(dataset)]
            count += 1
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert image.shape == (3, crop, crop) and mask.shape == (crop, crop)
    return count / elapsed, count / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the sample image")
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    wall, cpu = measure(width, height, args.crop, args.seconds)
    print(f"{wall:.1f} images/s wall-clock, {cpu:.1f} images per CPU-second (one thread; "
          f"{width}x{height} JPEG + PNG label, decode + checks + train_transforms, "
          f"crop {args.crop})")


if __name__ == "__main__":
    main()
