"""A model loaded for use, with what was stored beside its weights: what a checkpoint
(:func:`parsenet.engine.checkpoint.load_model`) and a released model
(:func:`parsenet.models.released.load_released`) both give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from parsenet.config import Config
from parsenet.preprocessing import Preprocessing

__all__ = ["LoadedModel", "palette_tuple"]


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
