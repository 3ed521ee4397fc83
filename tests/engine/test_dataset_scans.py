"""The trainer builds each dataset once: a held-out run lists its split's folders once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from trainer_fixtures import tiny_config, write_tiny_dataset

import parsenet.data.folder as folder
from parsenet.engine.trainer import train


@pytest.fixture
def scans(monkeypatch) -> Counter:
    """Image folder -> how many times its files were listed and paired."""
    counted: Counter = Counter()
    pair_files = folder.pair_files

    def counting(image_dir: Path, label_dir: Path, ids, **kwargs):
        counted[Path(image_dir).name] += 1
        return pair_files(image_dir, label_dir, ids, **kwargs)

    monkeypatch.setattr(folder, "pair_files", counting)
    return counted


def _start_event(out_dir: Path) -> dict:
    lines = (out_dir / "log.jsonl").read_text().splitlines()
    return next(e for e in map(json.loads, lines) if e.get("event") == "start")


def test_holdout_run_lists_its_split_once(tmp_path, scans):
    root = write_tiny_dataset(tmp_path / "data", n_train=8, n_val=2)
    config = tiny_config(root, tmp_path / "run", iterations=1)
    # SiftFlow's recipe: train and val carved from one split (every 2nd id held out).
    config.data.format = "siftflow"
    config.data.train_split = config.data.val_split = "train"
    config.data.holdout_every = 2
    train(config)
    assert scans == {"train": 1}
    start = _start_event(tmp_path / "run")
    assert (start["train_images"], start["val_images"]) == (4, 4)


def test_run_with_two_splits_lists_each_once(tmp_path, scans):
    root = write_tiny_dataset(tmp_path / "data", n_train=8, n_val=2)
    config = tiny_config(root, tmp_path / "run", iterations=1)
    config.data.val_split = "val"
    train(config)
    assert scans == {"train": 1, "val": 1}
    start = _start_event(tmp_path / "run")
    assert (start["train_images"], start["val_images"]) == (8, 2)
