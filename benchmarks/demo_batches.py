"""Fingerprint the first training batches of a config: do two code versions feed the same data?

    python -m benchmarks.demo_batches [--config configs/demo.yaml] [--batches 5]
        [--root DIR] [--save FILE.pt]

Builds the training loader the way the trainer does (the model's preprocessing, the
seeded ``ResumableSampler``, ``SeededSamples`` and the loader's generator) and prints one
SHA-256 per batch over the bytes of its images, labels and validity masks, then one over
all of them. Run it on two checkouts (``PYTHONPATH=<other>/src``) with the same ``--root``:
equal hashes mean the same batches bit for bit. ``--save`` keeps the tensors, so that
differing runs can be compared value by value. Not a test: it reads whatever the config's
data is.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools

import torch
from torch.utils.data import DataLoader

from parsenet.config import load_config
from parsenet.engine.sampler import ResumableSampler, SeededSamples
from parsenet.preprocessing import preprocessing_by_name
from parsenet.recipe import build_model_from_config, dataset_from_config


def _batches(config_path: str, count: int, root: str | None) -> list[list[torch.Tensor]]:
    overrides = [f"data.root={root}"] if root else []
    cfg = load_config(config_path, overrides)
    probe = dataset_from_config(cfg.data, "train")
    model = build_model_from_config(cfg.model, num_classes=len(probe.classes))
    preprocessing = (preprocessing_by_name(cfg.model.preprocessing)
                     if cfg.model.preprocessing else model.preprocessing)
    train_set = dataset_from_config(cfg.data, "train", preprocessing=preprocessing,
                                    with_valid=True)
    t = cfg.train
    loader = DataLoader(SeededSamples(train_set), batch_size=t.batch_size,
                        sampler=ResumableSampler(len(train_set), seed=t.seed),
                        num_workers=0, generator=torch.Generator().manual_seed(t.seed),
                        drop_last=True)
    return [list(batch) for batch in itertools.islice(loader, count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--root", default=None, help="override data.root")
    parser.add_argument("--save", default=None, help="also torch.save the batches here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = _batches(args.config, args.batches, args.root)
    total = hashlib.sha256()
    for i, batch in enumerate(batches):
        digest = hashlib.sha256()
        for tensor in batch:
            data = tensor.contiguous().numpy().tobytes()
            digest.update(data)
            total.update(data)
        shapes = ", ".join(f"{t.dtype} {tuple(t.shape)}" for t in batch)
        print(f"batch {i}: {digest.hexdigest()[:16]}  ({shapes})")
    print(f"all {len(batches)} batches: {total.hexdigest()}")
    if args.save:
        torch.save(batches, args.save)


if __name__ == "__main__":
    main()
