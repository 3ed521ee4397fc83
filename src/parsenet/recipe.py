"""From a config to what the library builds: the one place that reads a :class:`Config`'s
model section for the builders, which take plain keyword arguments.

    config = load_recipe("configs/demo.yaml", ["train.iterations=10"])  # read and checked
    model = build_model_from_config(config.model, num_classes=21)

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
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from torch import nn

from parsenet.config import Config, ModelConfig, load_config
from parsenet.config_messages import describe_validation_error
from parsenet.errors import ConfigError, ParseNetError
from parsenet.models.builders import model_builder
from parsenet.models.head_options import HeadOptions
from parsenet.models.weights import weights_enum_of
from parsenet.weights_api import Weights

__all__ = ["builder_arguments", "check_model_args", "build_model_from_config", "weights_of",
           "load_recipe"]


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
