"""Config files as dicts: YAML 1.2 text, and a file's ``base:`` chain merged over its bases.

What a dict means (its sections, types and bounds) is :mod:`parsenet.config`'s; this module
only reads text. YAML is read with YAML 1.2 numbers and booleans: ``1e-3`` is a number
(YAML 1.1 reads it as a string), ``yes``/``on``/``maybe`` are strings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from parsenet.config_messages import describe_yaml_error
from parsenet.errors import ConfigError

__all__ = ["load_yaml", "merge_dicts", "read_config_file"]


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 (core schema) floats and booleans.

    YAML 1.1, which PyYAML follows, wants a dot in a float (``1e-3`` is a string) and reads
    yes/no/on/off as booleans (``amp: off`` would be False). YAML 1.2 reads ``1e-3``, ``1E10``
    and ``.5`` as numbers and only true/false as booleans. A key given twice in one mapping
    is an error (PyYAML keeps the last silently: ``lr: 0.01`` then ``lr: 0.5`` trains at 0.5).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<:" may repeat merged keys
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line "
                        f"{first[key] + 1})", key_node.start_mark)
                first[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base class reports it
                continue
        return super().construct_mapping(node, deep)


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Yaml12Loader.add_implicit_resolver(  # after int: "12" stays an int
    _FLOAT, re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
                          |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """YAML text as Python values, numbers and booleans read as YAML 1.2 does."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506  (a SafeLoader subclass)


def merge_dicts(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``delta`` over ``base``: mappings merge key by key, anything else (lists too) replaces."""
    merged = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml_file(path: Path) -> Any:
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file (give a .yaml file)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte {data[e.start]:#04x} on line {line}); "
                          f"save it as UTF-8") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(describe_yaml_error(e, str(path))) from None


def read_config_file(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as a dict, with its ``base:`` chain resolved.

    ``base: other.yaml`` (a path relative to this file) is read first and this file is merged
    over it (:func:`merge_dicts`), so a paper row is a short delta over its table's file.
    """
    path = Path(path)
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"{path}: base: chain loops ({cycle})")
    values = _read_yaml_file(path) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: must be a path to a YAML file, got {base!r}")
    parent = read_config_file(path.parent / base, (*_chain, path.resolve()))
    return merge_dicts(parent, values)
