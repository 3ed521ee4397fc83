"""A Caffe net description in protobuf text format (``deploy.prototxt``), read as layers.

Optional input of ``parsenet convert caffe --prototxt``: a ``.caffemodel`` already stores
each layer's parameters beside its weights, so the text file only matters when it says
more (a deploy net's layer parameters). It is read with the field names of the authors'
fork (``weiliu89/caffe`` branch ``fcn``, ``src/caffe/proto/caffe.proto``): ``layer { name
type bottom top convolution_param { ... } pooling_param norm_param eltwise_param
concat_param unpooling_param }``; everything else is skipped. Layers come back as
:class:`~parsenet.convert.caffe_proto.CaffeLayer` without blobs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from parsenet.convert.caffe_proto import CaffeLayer
from parsenet.errors import WeightsError

__all__ = ["read_prototxt", "parse_prototxt"]

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}:])|'
                    r'([^\s{}:"\'#]+))')
MAX_PROTOTXT_BYTES = 16 * 2 ** 20


def _tokens(text: str, where: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise WeightsError(f"{where}: cannot read text at character {pos}")
        pos = m.end()
        token = m.group(1) or m.group(2) or m.group(3)
        if token:
            out.append(token)
    return out


def _block(tokens: list[str], i: int, where: str) -> tuple[dict[str, list[Any]], int]:
    """Fields of one message from ``tokens[i]`` up to its closing brace (or the end)."""
    out: dict[str, list[Any]] = {}
    while i < len(tokens) and tokens[i] != "}":
        key = tokens[i]
        i += 1
        if i < len(tokens) and tokens[i] == ":":
            i += 1
        if i >= len(tokens):
            raise WeightsError(f"{where}: {key!r} has no value")
        if tokens[i] == "{":
            value, i = _block(tokens, i + 1, where)
            if i >= len(tokens):
                raise WeightsError(f"{where}: unclosed {{ after {key!r}")
            i += 1
        else:
            value = tokens[i].strip("\"'") if tokens[i][0] in "\"'" else tokens[i]
            i += 1
        out.setdefault(key, []).append(value)
    return out, i


def _one(block: dict[str, list[Any]], key: str, default: Any = None) -> Any:
    return block.get(key, [default])[0]


def _number(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise WeightsError(f"{where}: {value!r} is not a number") from None


def _int(block: dict[str, list[Any]], key: str, default: int | None, where: str
         ) -> int | None:
    return int(_number(_one(block, key), f"{where}.{key}")) if key in block else default


def _flag(value: Any) -> bool:
    return str(value).lower() in ("true", "1")


def _params(layer: dict[str, list[Any]], where: str) -> dict[str, Any]:
    if "convolution_param" in layer:
        p = layer["convolution_param"][0]
        return {"num_output": _int(p, "num_output", None, where),
                "bias_term": _flag(_one(p, "bias_term", True)),
                "kernel": _int(p, "kernel_h", None, where) or _int(p, "kernel_size", None, where),
                "stride": _int(p, "stride_h", None, where) or _int(p, "stride", 1, where),
                "pad": _int(p, "pad_h", None, where) or _int(p, "pad", 0, where),
                "group": _int(p, "group", 1, where),
                "dilation": _int(p, "filter_stride", None, where) or
                _int(p, "dilation", 1, where)}
    if "pooling_param" in layer:
        p = layer["pooling_param"][0]
        bins = (_int(p, "bin_size", None, where), _int(p, "bin_h", None, where),
                _int(p, "bin_w", None, where))
        return {"pool": str(_one(p, "pool", "MAX")),
                "kernel": _int(p, "kernel_h", None, where) or _int(p, "kernel_size", None, where),
                "stride": _int(p, "stride_h", None, where) or _int(p, "stride", 1, where),
                "pad": _int(p, "pad_h", None, where) or _int(p, "pad", 0, where),
                "global_pooling": _flag(_one(p, "global_pooling", False)) or bins[0] == 1
                or bins[1] == bins[2] == 1}
    if "norm_param" in layer:
        p = layer["norm_param"][0]
        return {"across_spatial": _flag(_one(p, "across_spatial", True)),
                "channel_shared": _flag(_one(p, "channel_shared", True)),
                "fix_scale": _flag(_one(p, "fix_scale", True)),
                "eps": _number(_one(p, "eps", 1e-10), f"{where}.eps")}
    if "eltwise_param" in layer:
        p = layer["eltwise_param"][0]
        return {"operation": str(_one(p, "operation", "SUM")),
                "coeff": [_number(c, f"{where}.coeff") for c in p.get("coeff", [])]}
    if "unpooling_param" in layer:
        return {"unpool": str(_one(layer["unpooling_param"][0], "unpool", "FIXED"))}
    if layer.get("type", [""])[0] == "UnPooling":
        return {"unpool": "FIXED"}
    if "concat_param" in layer:
        p = layer["concat_param"][0]
        return {"axis": int(_number(_one(p, "axis", _one(p, "concat_dim", 1)), where))}
    if layer.get("type", [""])[0] == "Normalize":  # no norm_param: Caffe's defaults
        return {"across_spatial": True, "channel_shared": True, "fix_scale": True,
                "eps": 1e-10}
    return {}


def parse_prototxt(text: str, where: str) -> list[CaffeLayer]:
    """The V2 layers of a net in text format."""
    tokens = _tokens(text, where)
    net, i = _block(tokens, 0, where)
    if i < len(tokens):
        raise WeightsError(f"{where}: unmatched }} at token {i}")
    if "layers" in net and "layer" not in net:
        raise WeightsError(f"{where}: a V1 Caffe net ('layers'); upgrade it with Caffe's "
                           "tools/upgrade_net_proto_text first")
    layers = []
    for k, block in enumerate(net.get("layer", [])):
        if not isinstance(block, dict):
            raise WeightsError(f"{where}: layer {k} is not a {{ }} block")
        name = str(_one(block, "name", ""))
        layers.append(CaffeLayer(name=name, type=str(_one(block, "type", "")),
                                 bottoms=[str(b) for b in block.get("bottom", [])],
                                 tops=[str(t) for t in block.get("top", [])],
                                 params=_params(block, f"{where}: layer {name!r}")))
    if not layers:
        raise WeightsError(f"{where}: no 'layer {{ }}' blocks (not a Caffe prototxt?)")
    return layers


def read_prototxt(path: str | Path) -> list[CaffeLayer]:
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(MAX_PROTOTXT_BYTES + 1)
    if len(data) > MAX_PROTOTXT_BYTES:
        raise WeightsError(f"{path}: over 16 MiB, too large for a net description")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise WeightsError(f"{path}: not UTF-8 text (a binary .caffemodel given as "
                           "--prototxt?)") from None
    return parse_prototxt(text, str(path))
