"""A registered model's weights enum, read from its builder's ``weights`` annotation (as
torchvision's ``get_model_weights``)."""

from __future__ import annotations

import typing

from parsenet.models.builders import model_builder
from parsenet.weights_api import WeightsEnum

__all__ = ["weights_enum_of"]


def weights_enum_of(name: str) -> type[WeightsEnum]:
    """The :class:`WeightsEnum` of the model registered as ``name``."""
    hint = typing.get_type_hints(model_builder(name)).get("weights")
    for arg in typing.get_args(hint):
        if isinstance(arg, type) and issubclass(arg, WeightsEnum):
            return arg
    raise TypeError(f"builder {name}: its weights argument names no WeightsEnum")
