"""Small pieces shared by the trainer tests (imported by them and by ``train_entry.py``).

A tiny dataset in the common layout (images/<split>/*.png, labels/<split>/*.png,
classes.txt), read either by the data package (the trainer's default path) or by a minimal
reader with random crop + flip drawn from torch's global RNG, injected through the
trainer's ``dataset_factory`` hook so that the loop's own tests do not depend on the data
package.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from parsenet.config import Config, DataConfig, ModelConfig, TrainConfig
from parsenet.engine.trainer import train
from parsenet.preprocessing import IMAGENET
from parsenet.recipe import dataset_from_config

CLASSES = ["background", "disc", "square"]
PALETTE = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30]], dtype=np.uint8)


def write_tiny_dataset(root: Path, n_train: int = 8, n_val: int = 2, height: int = 56,
                       width: int = 64, seed: int = 0) -> Path:
    """Coloured shapes on noise; labels have a random band of 255 (ignored) pixels so micro-
    batches differ in their count of valid pixels."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    yy, xx = np.mgrid[:height, :width]
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = np.zeros((height, width), np.uint8)
            cy, cx, r = rng.integers(12, height - 12), rng.integers(12, width - 12), 10
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
            sy, sx = rng.integers(0, height - 14), rng.integers(0, width - 14)
            label[sy:sy + 14, sx:sx + 14] = 2
            image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
            image[label == 1] += np.array([150, 20, 20], np.uint8)
            image[label == 2] += np.array([20, 150, 20], np.uint8)
            band = rng.integers(0, 12)
            label[:band] = 255
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{i:03d}.png")
    return root


class TinyFolderDataset(torch.utils.data.Dataset):
    """Reads the layout above; training samples get a random crop and horizontal flip."""

    def __init__(self, root: str, split: str, preprocessing, crop: int, augment: bool,
                 delay: float = 0.0) -> None:
        self.root = Path(root)
        self.classes = self.root.joinpath("classes.txt").read_text().split()
        self.num_classes = len(self.classes)
        self.palette = PALETTE[: self.num_classes]
        self.ignore_index = 255
        self.ids = sorted(p.stem for p in (self.root / "images" / split).glob("*.png"))
        self.split, self.preprocessing = split, preprocessing or IMAGENET
        self.crop, self.augment, self.delay = crop, augment, delay

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        if self.delay:
            time.sleep(self.delay)
        name = self.ids[i]
        image = torch.from_numpy(np.array(Image.open(self.root / "images" / self.split
                                                     / f"{name}.png"))).permute(2, 0, 1)
        mask = torch.from_numpy(np.array(Image.open(self.root / "labels" / self.split
                                                    / f"{name}.png"))).long()
        if self.augment:
            h, w = mask.shape
            top = int(torch.randint(0, h - self.crop + 1, ()))
            left = int(torch.randint(0, w - self.crop + 1, ()))
            image = image[:, top:top + self.crop, left:left + self.crop]
            mask = mask[top:top + self.crop, left:left + self.crop]
            if torch.rand(()) < 0.5:
                image, mask = image.flip(-1), mask.flip(-1)
        return self.preprocessing(image).contiguous(), mask.contiguous()


def tiny_factory(delay: float = 0.0):
    """A ``dataset_factory`` for :func:`parsenet.engine.trainer.train`."""

    def factory(data: DataConfig, split: str, preprocessing):
        name = data.train_split if split == "train" else data.val_split
        return TinyFolderDataset(data.root, name, preprocessing, data.crop_size,
                                 augment=split == "train", delay=delay if split == "train"
                                 else 0.0)

    return factory


class Delayed(torch.utils.data.Dataset):
    """Sleeps before each load: slows a run down enough to interrupt it mid-way."""

    def __init__(self, dataset, delay: float) -> None:
        self.dataset, self.delay = dataset, delay

    def __getattr__(self, name):  # classes, palette, ... of the wrapped dataset
        if "dataset" not in self.__dict__:  # while unpickling in a loader worker
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        time.sleep(self.delay)
        return self.dataset[i]


def delayed_factory(delay: float):
    """The trainer's default ``dataset_from_config`` path, training samples delayed by ``delay``."""
    def factory(data: DataConfig, split: str, preprocessing):
        dataset = dataset_from_config(data, split, preprocessing=preprocessing,
                                with_valid=split == "train")
        return Delayed(dataset, delay) if split == "train" and preprocessing else dataset

    return factory


def tiny_config(root: Path, out_dir: Path, **train) -> Config:
    """A 48x48, width-1/16 ParseNet without dropout (dropout masks depend on the batch
    split, which the equivalence tests vary), in float32: the equivalence tests (resume,
    accumulation, DDP == one process) compare at 1e-5 or exactly, which bf16 autocast
    (``amp: auto`` on a CPU with native bf16) cannot meet. The bf16 path has its own tests."""
    values = dict(iterations=6, batch_size=2, lr=0.01, checkpoint_every=2, log_every=1,
                  out_dir=str(out_dir), progress=False, val_every=0, weight_decay=5e-4,
                  amp="off")
    values.update(train)
    return Config(
        name="tiny",
        model=ModelConfig(name="parsenet_vgg16",
                          args={"width": 0.0625, "dropout": 0.0, "context_dropout": 0.0}),
        data=DataConfig(root=str(root), crop_size=48, workers=0, val_split=""),
        train=TrainConfig(**values),
    )


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(Path(out_dir) / "checkpoints" / "last.pt", weights_only=True)
    return state["model"]


def run_training(config: Config, resume: bool, delay: float, log_path: str,
                 env: dict[str, str]) -> None:
    """Body of a child process: train with ``env`` added to the environment (torchrun's
    variables for DDP), output to ``log_path``, exit status 0, 1 (error) or the trainer's
    SystemExit code (143 after SIGTERM)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    torch.set_num_threads(1)  # as in the test process: same float sums
    # Loader workers: fork, Linux's default (a forkserver child would inherit forkserver).
    multiprocessing.set_start_method("fork", force=True)
    code = 0
    try:
        train(config, resume=resume, dataset_factory=delayed_factory(delay) if delay else None)
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(code)
