"""Tiny checkpoints and a real server on a free loopback port, for the serve tests."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from parsenet.config import Config, config_to_dict
from parsenet.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from parsenet.models import parsenet_vgg16

WIDTH = 0.0625  # 1/16 of VGG-16's channels: a forward pass on 100 x 100 takes milliseconds


def write_tiny_checkpoint(path: Path, classes: Sequence[str], *, seed: int, name: str,
                          eval_window: int = 512, eval_stride: int = 341,
                          data: dict[str, Any] | None = None, **model_args) -> Path:
    """An untrained ParseNet (or, with context/normalize False, a baseline) in the
    trainer's checkpoint format, written by the project's save_checkpoint; ``data``:
    config.data values, e.g. the root of the dataset (the page's examples come from its
    val split)."""
    config = Config()
    config.name = name
    for key, value in (data or {}).items():
        setattr(config.data, key, str(value) if isinstance(value, Path) else value)
    config.model.args = {"width": WIDTH, **model_args}
    config.eval.window, config.eval.stride = eval_window, eval_stride
    torch.manual_seed(seed)
    model = parsenet_vgg16(num_classes=len(classes), width=WIDTH, **model_args)
    rng = np.random.default_rng(seed)
    state = {"format": CHECKPOINT_FORMAT, "iteration": 1, "model": model.state_dict(),
             "config": config_to_dict(config), "classes": list(classes),
             "palette": rng.integers(0, 256, (len(classes), 3)).tolist(),
             "preprocessing": model.preprocessing.to_dict()}
    return save_checkpoint(path, state)


def write_tiny_pair(root: Path, classes: Sequence[str], **kwargs) -> list[Path]:
    """A baseline and a ParseNet that differ in architecture and initialisation."""
    return [write_tiny_checkpoint(root / "baseline.pt", classes, seed=1, name="tiny-baseline",
                                  context=False, normalize=False, **kwargs),
            write_tiny_checkpoint(root / "parsenet.pt", classes, seed=2, name="tiny-parsenet",
                                  **kwargs)]


def write_tiny_folder(root: Path, classes: Sequence[str], *, count: int = 4,
                      size: tuple[int, int] = (50, 70)) -> Path:
    """A folder-layout dataset with ``count`` random images in its val split."""
    rng = np.random.default_rng(0)
    for kind in ("images", "labels"):
        (root / kind / "val").mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "images" / "val" / f"v{i}.png")
        Image.fromarray(rng.integers(0, len(classes), size, dtype=np.uint8)).save(
            root / "labels" / "val" / f"v{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def image_bytes(height: int, width: int, *, seed: int = 0, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buffer, format=fmt)
    return buffer.getvalue()


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free 127.0.0.1 port; yields its URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
