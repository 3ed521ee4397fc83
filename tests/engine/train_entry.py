"""Subprocess entry for the trainer tests: ``python train_entry.py CONFIG.yaml [--resume]
[--delay SECONDS]``; also run under ``torchrun`` for the DDP test."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainer_fixtures import tiny_factory  # noqa: E402

from parsenet.config import load_config  # noqa: E402
from parsenet.engine.trainer import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per training sample")
    args = parser.parse_args()
    train(load_config(args.config), resume=args.resume, dataset_factory=tiny_factory(args.delay))


if __name__ == "__main__":
    main()
