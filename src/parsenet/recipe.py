"""From a config to what the library builds: the one place that reads a :class:`Config`'s
model and data sections for the builders and datasets, which take plain keyword arguments.

    config = load_recipe("configs/demo.yaml", ["train.iterations=10"])  # read and checked
    model = build_model_from_config(config.model, num_classes=21)
    train, val = datasets_from_config(config.data, CAFFE_VGG)

The model's arguments are checked against its builder's signature and type hints when the
config is read (:func:`check_model_args`), so a misspelt or mistyped key is one line that
names it, before any dataset or weights file is opened.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from torch import nn

from parsenet.config import Config, DataConfig, ModelConfig, load_config
from parsenet.config_messages import describe_validation_error
from parsenet.data.build import build_dataset, build_datasets
from parsenet.data.dataset import SegmentationDataset, Transforms
from parsenet.data.transforms import eval_transforms, train_transforms
from parsenet.errors import ConfigError, ParseNetError
from parsenet.models.builders import model_builder
from parsenet.models.head_options import HeadOptions
from parsenet.models.weights import weights_enum_of
from parsenet.preprocessing import Preprocessing
from parsenet.weights_api import Weights

__all__ = ["builder_arguments", "check_model_args", "build_model_from_config", "weights_of",
           "load_recipe", "data_source", "train_transforms_from_config",
           "eval_transforms_from_config", "dataset_from_config",
           "datasets_from_config"]


@functools.cache
def builder_arguments(name: str) -> type[BaseModel]:
    """A pydantic model of a builder's keyword arguments, from its signature and hints."""
    builder = model_builder(name)
    hints = typing.get_type_hints(builder)
    params = inspect.signature(builder).parameters.values()
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind is p.KEYWORD_ONLY and p.name != "num_classes":
            fields[p.name] = (hints.get(p.name, Any), p.default)
        if p.name == "features" and any(q.kind is q.VAR_KEYWORD for q in params):
            # ``**head``: the HeadOptions fields, listed after the taps they act on
            head_hints = typing.get_type_hints(HeadOptions)
            fields |= {f.name: (head_hints[f.name], f.default)
                       for f in dataclasses.fields(HeadOptions)}
    return create_model(f"{name}_args", __config__=ConfigDict(extra="forbid", strict=True,
                                                              arbitrary_types_allowed=True),
                        **fields)


def check_model_args(model: ModelConfig) -> None:
    """A model name the registry lacks, or an argument its builder cannot take (unknown key,
    wrong type), is a one-line :class:`ConfigError` naming the key. The values themselves
    (e.g. a fusion mode) are the builder's to judge when it builds."""
    model_builder(model.name)  # the name first: one line listing the known ones
    arguments = builder_arguments(model.name)
    try:  # types checked against the builder's own hints; the values pass unchanged
        arguments.model_validate(model.args)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, arguments, "", section="model.args")
                          ) from None


def build_model_from_config(model: ModelConfig, *, num_classes: int) -> nn.Module:
    """The model a config's ``model`` section describes; a name or argument the builder
    cannot use (unknown, wrong type, bad value) is a one-line :class:`ConfigError`."""
    check_model_args(model)
    try:
        return model_builder(model.name)(num_classes=num_classes, **model.args)
    except ValueError as e:
        if isinstance(e, ParseNetError):  # weights files name themselves
            raise
        # The builders and layers raise ValueError only for an argument they cannot use.
        raise ConfigError(f"model.args: {e} (model {model.name})") from e


def weights_of(model: ModelConfig) -> Weights | None:
    """The entry ``model.args.weights`` names (None: no weights), without reading a file."""
    return weights_enum_of(model.name).verify(model.args.get("weights"))


def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None
                ) -> Config:
    """:func:`parsenet.config.load_config`, then the model section checked against its
    builder (:func:`check_model_args`)."""
    config = load_config(path, overrides)
    check_model_args(config.model)
    return config


def data_source(data: DataConfig) -> dict[str, Any]:
    """Where a config's dataset is and how to read it: the keyword arguments that
    :func:`~parsenet.data.build.build_dataset` and ``build_datasets`` share."""
    return dict(root=data.root, format=data.format, synthetic=dict(data.synthetic),
                max_pixels=round(data.max_megapixels * 1e6))


def train_transforms_from_config(data: DataConfig, preprocessing: Preprocessing,
                                 with_valid: bool = False) -> Transforms:
    """The training augmentation the data section describes (warp, crop, scale, flip,
    jitter); ``with_valid``: items are ``(image, mask, valid)``, ``valid`` false on crop
    padding."""
    return train_transforms(data.crop_size, tuple(data.scale_range), data.flip,
                            data.color_jitter, preprocessing, with_valid, data.resize)


def eval_transforms_from_config(data: DataConfig, preprocessing: Preprocessing) -> Transforms:
    """The evaluation pipeline the data section describes: normalisation, and the warp to
    ``data.resize`` where it is set (the label stays full size)."""
    return eval_transforms(preprocessing, data.resize)


def dataset_from_config(data: DataConfig, split: Literal["train", "val"], *,
                        transforms: Transforms | None = None,
                        preprocessing: Preprocessing | None = None,
                        with_valid: bool = False) -> SegmentationDataset:
    """The ``split`` ("train" or "val") of the dataset ``data`` describes.

    ``split`` maps to ``data.train_split`` / ``data.val_split``; with ``data.holdout_every``,
    "val" is the held-out ids of ``data.val_split`` and "train" the rest of
    ``data.train_split``. Without ``transforms`` but with ``preprocessing``, "train" gets
    :func:`train_transforms_from_config` and "val" ``eval_transforms``; with neither, items
    are raw uint8 pairs.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if transforms is None and preprocessing is not None:
        transforms = (train_transforms_from_config(data, preprocessing, with_valid)
                      if split == "train" else eval_transforms_from_config(data, preprocessing))
    return build_dataset(split=data.train_split if split == "train" else data.val_split,
                         holdout_every=data.holdout_every,
                         held_out=split == "val" and data.holdout_every > 0,
                         transforms=transforms, **data_source(data))


def datasets_from_config(data: DataConfig, preprocessing: Preprocessing, *,
                         with_valid: bool = False
                         ) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """``(train, val)`` as :func:`dataset_from_config` builds them (val None without
    ``data.val_split``), each split's folders listed once."""
    return build_datasets(
        train_split=data.train_split, val_split=data.val_split or None,
        holdout_every=data.holdout_every,
        train_transforms=train_transforms_from_config(data, preprocessing, with_valid),
        val_transforms=eval_transforms_from_config(data, preprocessing), **data_source(data))
