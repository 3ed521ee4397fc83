"""The tiny folder-layout dataset both halves of the bad-input catalogue train and predict on,
and the hostile image files of the catalogue (written by the tests themselves)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["sky", "ground", "thing"]


def write_dataset(root: Path, n: int = 2, classes: list[str] = CLASSES,
                  splits: tuple[str, ...] = ("train", "val"),
                  size: tuple[int, int] = (40, 48)) -> Path:
    """images/ + labels/ for each split, and classes.txt: ``n`` seeded PNG pairs of ``size``
    (height, width) a split."""
    rng = np.random.default_rng(0)
    for split in splits:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                root / "images" / split / f"im{i}.png")
            label = rng.integers(0, len(classes), size).astype(np.uint8)
            Image.fromarray(label).save(root / "labels" / split / f"im{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def write_train_yaml(tmp_path: Path, data_root: Path, model_args: dict | None = None,
                     **train) -> Path:
    """A tiny training config (width-1/16 VGG, 32-pixel crops, CPU, fp32) as
    ``tmp_path/tiny.yaml``; ``train`` sets the train section (lr, device, amp, progress and
    out_dir have defaults)."""
    values = dict(lr=0.01, device="cpu", amp="off", progress=False,
                  out_dir=str(tmp_path / "run"))
    values.update(train)
    config = {"model": {"name": "parsenet_vgg16", "args": {"width": 0.0625, **(model_args or {})}},
              "data": {"root": str(data_root), "crop_size": 32, "scale_range": [1.0, 1.0],
                       "workers": 0},
              "train": values}
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def write_tiny_checkpoint(path: Path, data_root: Path) -> Path:
    """A seeded width-1/16 ParseNet VGG checkpoint at iteration 7 over ``data_root``."""
    import torch

    from parsenet.config import Config, config_to_dict
    from parsenet.engine import checkpoint as ckpt
    from parsenet.models import parsenet_vgg16

    config = Config()
    config.model.args = {"width": 0.0625}
    config.data.root = str(data_root)
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=len(CLASSES), width=0.0625)
    state = {"format": ckpt.CHECKPOINT_FORMAT, "iteration": 7, "model": model.state_dict(),
             "config": config_to_dict(config), "classes": CLASSES, "palette": None,
             "preprocessing": model.preprocessing.to_dict()}
    return ckpt.save_checkpoint(path, state)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, raw: bytes, *, depth: int = 8, color_type: int = 2,
        interlace: int = 0, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def short_png() -> bytes:
    """A 70-byte PNG: 100 x 100 RGB whose IDAT holds 301 of 30100 bytes. libpng
    says "Not enough image data" and torchvision's decode_png dies with SIGSEGV."""
    return png(100, 100, b"\0" * 301)


def bomb_png() -> bytes:
    """A palette PNG whose header claims 30000 x 30000. A real one is 875 KB of zlib data
    (all rows); only the header matters here, since nothing past it may be decoded."""
    return png(30000, 30000, b"\0" * 30001, color_type=3,
               extra=chunk(b"PLTE", bytes(range(12))))


def jpeg(width: int = 32, height: int = 24, seed: int = 0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buffer, "JPEG", **save)
    return buffer.getvalue()


def bomb_jpeg() -> bytes:
    """A small JPEG whose frame header (SOF) claims 40000 x 40000 (632 bytes)."""
    data = jpeg(8, 8)
    sof = data.index(b"\xff\xc0")
    return data[:sof + 5] + struct.pack(">HH", 40000, 40000) + data[sof + 9:]
