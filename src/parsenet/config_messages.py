"""Config problems as one line each: pydantic's validation errors, and YAML's, reworded.

pydantic checks the types and bounds; this module only says what it found in the words a
user of the YAML files needs: the dotted key, the value given and what is allowed, e.g.

    configs/x.yaml: train.iterations: 'abc' is not an integer (expected an integer >= 1)
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Collection, Sequence
from typing import Any

import annotated_types as at
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

__all__ = ["describe_validation_error", "describe_yaml_error", "expected"]

# pydantic error type -> what the value is not (or what is wrong with it)
_IS_NOT = {
    "int_type": "is not an integer", "int_parsing": "is not an integer",
    "int_from_float": "is not an integer",
    "float_type": "is not a number", "float_parsing": "is not a number",
    "finite_number": "is not a finite number",
    "bool_type": "is not a boolean", "bool_parsing": "is not a boolean",
    "string_type": "is not a string", "dict_type": "is not a mapping",
    "model_type": "is not a mapping", "model_attributes_type": "is not a mapping",
    "list_type": "is not a list",
    "literal_error": "is not allowed", "string_pattern_mismatch": "is not allowed",
    "too_short": "has too few items", "too_long": "has too many items",
    "string_too_short": "is empty", "sequence_str": "is a string, not a list",
}
_NOUNS = {"int": "an integer", "float": "a number", "bool": "true or false",
          "string": "a string", "dict": "a mapping", "list": "a list"}
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _bounds(metadata: Sequence[Any]) -> str:
    parts = [f"{sign} {getattr(m, name)}" for m in metadata for name, sign in _BOUNDS
             if isinstance(m, getattr(at, name.capitalize()))]
    return " and ".join(parts)


def _describe_type(annotation: Any, metadata: Sequence[Any]) -> str:
    """What a field of this annotation accepts, in words."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _describe_type(args[0], [*metadata, *args[1:]])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"a mapping of {getattr(annotation, 'SECTION', '') or 'config'} settings"
    bounds = _bounds(metadata)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(a, metadata) for a in args)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             dict: "a mapping of name: value", list: "a list", Sequence: "a list",
             tuple: "a list", type(None): "null"}
    name = names.get(origin or annotation, getattr(annotation, "__name__", str(annotation)))
    return f"{name} {bounds}" if bounds else name


def expected(field: FieldInfo) -> str:
    """What ``field`` accepts: its description if it has one, else derived from its type."""
    if field.description:
        return field.description
    return _describe_type(field.annotation, field.metadata)


def _field_at(model: type[BaseModel], loc: Sequence[Any]) -> FieldInfo | None:
    """The innermost model field on the path ``loc`` (list indices stay on the list)."""
    field = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            break
        if part not in model.model_fields:
            break
        field = model.model_fields[part]
        model = field.annotation  # type: ignore[assignment]
    return field


def _key(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _problem(error: dict[str, Any], model: type[BaseModel] | None, loc: Sequence[Any]) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        parent = _field_at(model, loc[:-1])
        owner = parent.annotation if parent is not None else model
        known = ", ".join(getattr(owner, "model_fields", {}))
        return f"unknown key (known: {known})"
    if kind == "missing":
        return "is missing"
    if kind in ("value_error", "assertion_error"):  # our own validators: the message says it
        return str(error["ctx"]["error"])
    field = _field_at(model, loc) if model is not None else None
    if field is None:  # no field to describe: what pydantic expected, in the same words
        allowed = _NOUNS.get(kind.split("_")[0], error["msg"])
    elif loc and isinstance(loc[-1], int) and not field.description:
        allowed = _describe_type(typing.get_args(_unannotated(field.annotation))[0], ())
    else:
        allowed = expected(field)
    return f"{value!r} {_IS_NOT.get(kind, 'is not allowed')} (expected {allowed})"


def _unannotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def describe_validation_error(error: ValidationError, model: type[BaseModel] | None, where: str,
                              from_overrides: Collection[str] = (), section: str = "") -> str:
    """One line for every problem pydantic found, each ``<where>: <key>: <problem>``.

    ``from_overrides``: dotted keys given with ``--set``; a problem at or under one of them
    is reported as ``--set <key>`` instead of ``<where>``. ``section`` prefixes the keys of
    a section validated on its own (``DataConfig(...)`` reports ``data.format``).
    """
    lines = []
    for e in error.errors(include_url=False):
        loc = tuple(e["loc"])
        key, problem = _key(((section,) if section else ()) + loc), _problem(e, model, loc)
        # A check across fields (a model validator) names its field as "field: problem".
        named = re.match(r"(\w+): (.*)", problem)
        if e["type"] == "value_error" and named:
            inner = _field_at(model, loc)
            fields = getattr(inner.annotation if inner is not None else model, "model_fields", {})
            if named.group(1) in fields:
                key, problem = _key((key, named.group(1))), named.group(2)
        # An unknown section that only an override made up (--set trian.iterations=3).
        made_by = [k for k in from_overrides if k.startswith(key + ".")]
        if any(key == k or key.startswith((k + ".", k + "[")) for k in from_overrides):
            lines.append(f"--set {key}: {problem}")
        elif e["type"] == "extra_forbidden" and made_by:
            lines.append(f"--set {made_by[0]}: {key}: {problem}")
        else:
            lines.append(": ".join(part for part in (where, key, problem) if part))
    return "; ".join(lines)


def describe_yaml_error(error: yaml.YAMLError, path: str) -> str:
    """``path:line:column: not valid YAML: problem`` (1-based, as editors count)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    detail = f"{problem} ({context})" if context else problem
    return f"{where}: not valid YAML: {detail}"
