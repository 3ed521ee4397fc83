"""A model loaded for use, with what was stored beside its weights: what a checkpoint
(:func:`parsenet.engine.checkpoint.load_model`) and a released model (:func:`load_released`)
both give.

    loaded = load_released("stanford")  # .model (eval mode), .config, .classes, .palette, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from parsenet.config import Config, config_from_dict
from parsenet.models.released import Release, released
from parsenet.preprocessing import Preprocessing

__all__ = ["LoadedModel", "palette_tuple", "load_released"]


@dataclass(frozen=True)
class LoadedModel:
    """A trained model with what was stored beside its weights, checked once on loading:
    callers read these fields rather than parsing the stored config again."""

    model: nn.Module  # in eval mode, on the device it was loaded to
    config: Config  # the run's resolved config
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None  # K x RGB; None: the dataset had none
    preprocessing: Preprocessing  # how the weights want their images prepared
    iteration: int  # completed training iterations
    best_mean_iou: float | None = None  # best validation mean IoU of the run, if it had one


def palette_tuple(palette: Any) -> tuple[tuple[int, int, int], ...] | None:
    """A stored K x 3 palette (lists) as tuples, so that a :class:`LoadedModel` is immutable."""
    return None if palette is None else tuple(tuple(int(v) for v in rgb) for rgb in palette)


def load_released(name: str | Release, device: str | torch.device = "cpu") -> LoadedModel:
    """The release (a name such as ``"siftflow"``, or its entry) as
    :func:`parsenet.engine.checkpoint.load_model` returns a checkpoint."""
    release = released(name) if isinstance(name, str) else name
    meta = release.meta
    config = config_from_dict(meta["config"], f"released model {release.name}: config")
    return LoadedModel(model=release.build(device), config=config,
                       classes=tuple(meta["classes"]), palette=palette_tuple(meta["palette"]),
                       preprocessing=release.preprocessing, iteration=int(meta["iteration"]))
