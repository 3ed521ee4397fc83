"""The few ``caffe.proto`` messages a ParseNet ``.caffemodel`` needs, decoded from the wire.

Field numbers are those of the authors' Caffe fork, ``weiliu89/caffe`` branch ``fcn``,
``src/caffe/proto/caffe.proto`` (the branch the released ParseNet was trained with):

    NetParameter          name 1, layer 100 (V2 ``LayerParameter``), layers 2 (V1)
    LayerParameter        name 1, type 2, bottom 3, top 4, blobs 7,
                          convolution_param 106, eltwise_param 110, pooling_param 121,
                          concat_param 104, unpooling_param 133, norm_param 134
    BlobProto             num 1, channels 2, height 3, width 4, data 5 (packed float),
                          shape 7 (BlobShape: dim 1, packed int64), double_data 8
    ConvolutionParameter  num_output 1, bias_term 2, pad 3, kernel_size 4, group 5,
                          stride 6, pad_h 9, pad_w 10, kernel_h 11, kernel_w 12,
                          stride_h 13, stride_w 14, filter_stride 16 (the fork's dilation)
    PoolingParameter      pool 1 (MAX 0, AVE 1), kernel_size 2, stride 3, pad 4,
                          global_pooling 12, bin_size 13, bin_h 14, bin_w 15 (the fork's
                          pooling into a fixed number of bins; 1 bin is the whole map,
                          ``src/caffe/layers/pooling_layer.cpp``)
    NormalizeParameter    across_spatial 1 (default true), scale_filler 2,
                          channel_shared 3 (default true), fix_scale 4 (default true),
                          eps 5 (default 1e-10)
    EltwiseParameter      operation 1 (PROD 0, SUM 1, MAX 2; default SUM), coeff 2
    ConcatParameter       concat_dim 1, axis 2 (default 1)
    UnPoolingParameter    unpool 1 (FIXED 0, the default; DIV 1; REP 2)

Later Caffe (BVLC master, the fork's ``ssd`` branch) moved three of these: ``norm_param`` is
145 there (134 is ``log_param``), ``unpooling_param`` 146 (133 is unused there), and dilation is
ConvolutionParameter field 18 (16 is ``axis``). A Normalize layer's parameters are read from
134, else 145; a convolution's dilation from 17 (the fork's ``filter_stride_h``), else from
16 unless it is 1, else from 18. V1 ``layers`` (Caffe before 2015) are refused in one line:
Caffe's ``upgrade_net_proto_binary`` rewrites them as V2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parsenet.convert.wire import (
    BYTES,
    FIXED32,
    VARINT,
    WIRE_NAMES,
    Field,
    fields,
    packed_doubles,
    packed_floats,
    packed_varints,
)
from parsenet.errors import WeightsError

__all__ = ["CaffeLayer", "read_net", "parse_net"]

# Most bytes a .caffemodel may have: protobuf's own limit for one message is 2 GiB.
MAX_FILE_BYTES = 2 ** 31


@dataclass
class CaffeLayer:
    """One V2 layer: its name, type, blob names, weights (numpy, in Caffe's shapes) and the
    parameters of its type as a flat dict (``kernel_size``, ``dilation``, ...)."""

    name: str
    type: str
    bottoms: list[str] = field(default_factory=list)
    tops: list[str] = field(default_factory=list)
    blobs: list[np.ndarray] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


def _expect(f: Field, wire_type: int, where: str) -> None:
    if f.wire_type != wire_type:
        raise WeightsError(f"{where}: field {f.number} should be "
                           f"{WIRE_NAMES[wire_type]}, got {WIRE_NAMES.get(f.wire_type)}")


def _text(f: Field, where: str) -> str:
    _expect(f, BYTES, where)
    try:
        return bytes(f.value).decode("utf-8")
    except UnicodeDecodeError:
        raise WeightsError(f"{where}: field {f.number} is not UTF-8 text") from None


def _float(f: Field, where: str) -> float:
    _expect(f, FIXED32, where)
    return struct.unpack("<f", f.value.to_bytes(4, "little"))[0]


def _blob(buf: memoryview, where: str) -> np.ndarray:
    dims4 = [0, 0, 0, 0]
    shape: list[int] | None = None
    chunks: list[np.ndarray] = []
    for f in fields(buf, where):
        if f.number in (1, 2, 3, 4):
            _expect(f, VARINT, where)
            dims4[f.number - 1] = f.value
        elif f.number == 5:
            chunks.append(packed_floats(f, f"{where}.data"))
        elif f.number == 8:
            chunks.append(packed_doubles(f, f"{where}.double_data").astype(np.float32))
        elif f.number == 7:
            _expect(f, BYTES, where)
            shape = [d for g in fields(f.value, f"{where}.shape") if g.number == 1
                     for d in packed_varints(g, f"{where}.shape.dim")]
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if shape is None:
        shape = [d for d in dims4 if d] if any(dims4) else [data.size]
    if any(d >= 2 ** 62 for d in shape) or int(np.prod(shape, dtype=object)) != data.size:
        raise WeightsError(f"{where}: shape {shape} does not hold its {data.size} values")
    return data.astype(np.float32).reshape(shape)


def _conv_params(buf: memoryview, where: str) -> dict[str, Any]:
    raw: dict[int, int] = {}
    for f in fields(buf, where):
        if f.number in (1, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 16, 17, 18):
            values = packed_varints(f, f"{where}.{f.number}")
            raw[f.number] = values[0] if values else 0
        elif f.number == 2:
            _expect(f, VARINT, where)
            raw[2] = f.value
    if 17 in raw:  # the fork's filter_stride_h (its _w is 18)
        dilation = raw[17]
    elif raw.get(16, 1) != 1:  # the fork's filter_stride
        dilation = raw[16]
    else:  # later Caffe's dilation (16 is its axis, 1)
        dilation = raw.get(18, 1)
    return {"num_output": raw.get(1), "bias_term": bool(raw.get(2, 1)),
            "kernel": raw.get(11) or raw.get(4), "stride": raw.get(13) or raw.get(6) or 1,
            "pad": raw.get(9) or raw.get(3) or 0, "group": raw.get(5) or 1,
            "dilation": dilation}


def _pool_params(buf: memoryview, where: str) -> dict[str, Any]:
    raw: dict[int, int] = {}
    for f in fields(buf, where):
        _expect(f, VARINT, where)
        raw[f.number] = f.value
    return {"pool": {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}.get(raw.get(1, 0), "?"),
            "kernel": raw.get(5) or raw.get(2), "stride": raw.get(7) or raw.get(3) or 1,
            "pad": raw.get(9) or raw.get(4) or 0,
            # the fork's bin_size 1 (bin_h = bin_w = 1) pools the whole map, as global_pooling
            "global_pooling": bool(raw.get(12, 0)) or raw.get(13) == 1 or
            raw.get(14) == raw.get(15) == 1}


def _norm_params(buf: memoryview, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"across_spatial": True, "channel_shared": True,
                           "fix_scale": True, "eps": 1e-10}
    names = {1: "across_spatial", 3: "channel_shared", 4: "fix_scale"}
    for f in fields(buf, where):
        if f.number in names:
            _expect(f, VARINT, where)
            out[names[f.number]] = bool(f.value)
        elif f.number == 5:
            out["eps"] = _float(f, f"{where}.eps")
    return out


def _eltwise_params(buf: memoryview, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"operation": "SUM", "coeff": []}
    for f in fields(buf, where):
        if f.number == 1:
            _expect(f, VARINT, where)
            out["operation"] = {0: "PROD", 1: "SUM", 2: "MAX"}.get(f.value, "?")
        elif f.number == 2:
            out["coeff"] += [float(v) for v in packed_floats(f, f"{where}.coeff")]
    return out


def _unpool_params(buf: memoryview, where: str) -> dict[str, Any]:
    method = 0  # FIXED, the default: the value lands in the middle of its kernel only
    for f in fields(buf, where):
        if f.number == 1:
            _expect(f, VARINT, where)
            method = f.value
    return {"unpool": {0: "FIXED", 1: "DIV", 2: "REP"}.get(method, "?")}


def _concat_params(buf: memoryview, where: str) -> dict[str, Any]:
    axis = 1
    for f in fields(buf, where):
        if f.number in (1, 2):
            _expect(f, VARINT, where)
            axis = f.value
    return {"axis": axis}


# LayerParameter field -> (parser, which layer types it describes)
_PARAMS = {106: _conv_params, 121: _pool_params, 134: _norm_params, 145: _norm_params,
           110: _eltwise_params, 104: _concat_params, 133: _unpool_params,
           146: _unpool_params}


def _layer(buf: memoryview, where: str) -> CaffeLayer:
    layer = CaffeLayer(name="", type="")
    params: dict[int, dict[str, Any]] = {}
    for f in fields(buf, where):
        if f.number == 1:
            layer.name = _text(f, where)
            where = f"{where} ({layer.name!r})"
        elif f.number == 2:
            layer.type = _text(f, where)
        elif f.number == 3:
            layer.bottoms.append(_text(f, where))
        elif f.number == 4:
            layer.tops.append(_text(f, where))
        elif f.number == 7:
            _expect(f, BYTES, where)
            layer.blobs.append(_blob(f.value, f"{where}.blobs[{len(layer.blobs)}]"))
        elif f.number in _PARAMS:
            _expect(f, BYTES, where)
            params[f.number] = _PARAMS[f.number](f.value, f"{where}.param{f.number}")
    if layer.type == "Normalize":
        layer.params = params.get(134) or params.get(145) or _norm_params(memoryview(b""), "")
    elif layer.type == "UnPooling":
        layer.params = params.get(133) or params.get(146) or {"unpool": "FIXED"}
    else:
        layer.params = next((p for n, p in params.items() if n not in (134, 145)), {})
    return layer


def parse_net(data: bytes | memoryview, where: str) -> tuple[str, list[CaffeLayer]]:
    """(net name, its V2 layers in file order) of a serialised ``NetParameter``."""
    buf = memoryview(data)
    name, layers, v1 = "", [], 0
    for f in fields(buf, where):
        if f.number == 1 and f.wire_type == BYTES:
            name = _text(f, where)
        elif f.number == 100:
            _expect(f, BYTES, where)
            layers.append(_layer(f.value, f"{where}: layer {len(layers)}"))
        elif f.number == 2 and f.wire_type == BYTES:
            v1 += 1
    if v1 and not layers:
        raise WeightsError(f"{where}: a V1 Caffe net ('layers', before 2015); upgrade it with "
                           "Caffe's tools/upgrade_net_proto_binary first")
    if not layers:
        raise WeightsError(f"{where}: no Caffe layers in the file (not a .caffemodel?)")
    return name, layers


def read_net(path: str) -> tuple[str, list[CaffeLayer]]:
    """Read and decode a ``.caffemodel`` file; any problem is one WeightsError line."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise WeightsError(f"{path}: larger than 2 GiB, protobuf's limit for one message: "
                           "not a .caffemodel")
    return parse_net(data, str(path))
