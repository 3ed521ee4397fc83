"""What a cache is built from: the raw split, its identity, and the trunk's identity."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from parsenet.config import DataConfig
from parsenet.recipe import dataset_from_config

__all__ = ["dataset_id", "raw_split", "trunk_id"]


def raw_split(data: DataConfig, split: str) -> Any:
    """The split ("train"/"val") as raw uint8 (image, label) pairs, no transforms."""
    return dataset_from_config(data, split)


def dataset_id(data: DataConfig, split: str, dataset: Any) -> str:
    """Root, split and a hash of the split's ids: what identifies the images cached."""
    ids = hashlib.sha256("\n".join(dataset.ids).encode()).hexdigest()[:16]
    return f"{Path(data.root).resolve()}:{split}:{len(dataset.ids)}:{ids}"


def trunk_id(trunk: nn.Module) -> str:
    """The trunk's class, taps and a sha256 of its parameters and buffers (its
    ``identity_state()`` where it has one: the layers it computes with): two trunks with the
    same id compute the same features (the weights file itself need not be named)."""
    digest = hashlib.sha256()
    state = trunk.identity_state() if hasattr(trunk, "identity_state") else trunk.state_dict()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    taps = ",".join(getattr(trunk, "taps", ()))
    return f"{type(trunk).__name__}:{taps}:{digest.hexdigest()[:24]}"
