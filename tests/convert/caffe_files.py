"""Tiny Caffe ParseNets for the converter's tests: a protobuf encoder (written from the wire
format and the field numbers of weiliu89/caffe branch fcn's caffe.proto), the nets (the
layer names and structure of the authors' LargeFOV ParseNet at 1/16 width) and a NumPy
forward written from Caffe's layer semantics."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------- encoder


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_field(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def int_field(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def float_field(number: int, value: float) -> bytes:
    return tag(number, 5) + struct.pack("<f", value)


def blob(array: np.ndarray) -> bytes:
    dims = b"".join(varint(d) for d in array.shape)
    shape = length_field(1, dims)  # BlobShape.dim, packed
    return length_field(7, shape) + length_field(5, array.astype("<f4").tobytes())


def conv_param(num_output: int, kernel: int, pad: int, dilation: int) -> bytes:
    out = int_field(1, num_output) + int_field(4, kernel)
    out += int_field(3, pad) if pad else b""
    return out + (int_field(16, dilation) if dilation != 1 else b"")  # filter_stride


def pool_param(pool: str, kernel: int = 0, stride: int = 1, pad: int = 0,
               global_pooling: bool = False) -> bytes:
    out = int_field(1, {"MAX": 0, "AVE": 1}[pool])
    if global_pooling:
        return out + int_field(12, 1)
    return out + int_field(2, kernel) + int_field(3, stride) + int_field(4, pad)


def norm_param(across_spatial: bool, channel_shared: bool, fix_scale: bool) -> bytes:
    return (int_field(1, int(across_spatial)) + int_field(3, int(channel_shared))
            + int_field(4, int(fix_scale)))


@dataclass
class Layer:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    blobs: list[np.ndarray] = field(default_factory=list)
    params: dict[int, bytes] = field(default_factory=dict)  # LayerParameter field -> bytes
    info: dict[str, Any] = field(default_factory=dict)  # what the NumPy forward needs

    def encode(self) -> bytes:
        out = length_field(1, self.name.encode()) + length_field(2, self.type.encode())
        out += b"".join(length_field(3, b.encode()) for b in self.bottoms)
        out += b"".join(length_field(4, t.encode()) for t in self.tops)
        out += b"".join(length_field(7, blob(b)) for b in self.blobs)
        return out + b"".join(length_field(n, p) for n, p in self.params.items())


def encode_net(layers: list[Layer], name: str = "ParseNet") -> bytes:
    return length_field(1, name.encode()) + b"".join(length_field(100, layer.encode())
                                                     for layer in layers)


# ---------------------------------------------------------------------------- nets
WIDTHS = {1: 4, 2: 8, 3: 16, 4: 32, 5: 32}  # VGG-16's 64 ... 512 at 1/16
FC = 16  # fc6/fc7's 1024 at 1/64


def _conv(rng, name, bottom, top, c_in, c_out, kernel, pad=0, dilation=1, scale=None):
    std = scale if scale is not None else np.sqrt(2.0 / (c_in * kernel * kernel))
    w = rng.normal(0, std, (c_out, c_in, kernel, kernel)).astype(np.float32)
    b = rng.normal(0, 0.1, c_out).astype(np.float32)
    return Layer(name, "Convolution", [bottom], [top], [w, b],
                 {106: conv_param(c_out, kernel, pad, dilation)},
                 {"pad": pad, "dilation": dilation})


def trunk(rng) -> list[Layer]:
    """data -> conv1_1 ... pool5 -> fc6 (3x3, dilation 12) -> fc7 (1x1), with ReLUs and
    dropouts, LargeFOV's pools (3x3, pad 1; stride 2 for pool1-3, 1 for pool4-5)."""
    layers = [Layer("data", "Input", [], ["data"])]
    c_in, blob_name = 3, "data"
    for stage, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
        d = 2 if stage == 5 else 1
        for i in range(1, n + 1):
            name = f"conv{stage}_{i}"
            layers.append(_conv(rng, name, blob_name, name, c_in, WIDTHS[stage], 3, d, d))
            layers.append(Layer(f"relu{stage}_{i}", "ReLU", [name], [name]))
            c_in, blob_name = WIDTHS[stage], name
        stride = 2 if stage <= 3 else 1
        layers.append(Layer(f"pool{stage}", "Pooling", [blob_name], [f"pool{stage}"],
                            params={121: pool_param("MAX", 3, stride, 1)},
                            info={"kernel": 3, "stride": stride, "pad": 1}))
        blob_name = f"pool{stage}"
    layers.append(_conv(rng, "fc6", "pool5", "fc6", c_in, FC, 3, 12, 12))
    layers += [Layer("relu6", "ReLU", ["fc6"], ["fc6"]),
               Layer("drop6", "Dropout", ["fc6"], ["fc6"])]
    layers.append(_conv(rng, "fc7", "fc6", "fc7", FC, FC, 1))
    layers += [Layer("relu7", "ReLU", ["fc7"], ["fc7"]),
               Layer("drop7", "Dropout", ["fc7"], ["fc7"])]
    return layers


def _normalize(rng, name, bottom, channels, *, defaults, across_spatial=False,
               channel_shared=False, fix_scale=False):
    if defaults:  # no norm_param: Caffe's defaults (across spatial, shared, fixed)
        across_spatial = channel_shared = fix_scale = True
    scale = rng.uniform(5, 15, () if channel_shared else (channels,)).astype(np.float32)
    params = {} if defaults else {134: norm_param(across_spatial, channel_shared, fix_scale)}
    return Layer(name, "Normalize", [bottom], [name], [scale], params,
                 {"across_spatial": across_spatial})


def parsenet(rng, *, fusion: str = "late", normalize: bool = True, defaults: bool = False,
             context: bool = True, classes: int = 5, upsample: bool = False,
             norm_options: dict[str, bool] | None = None) -> list[Layer]:
    """A ParseNet head on :func:`trunk`: pool6 (global AVE of fc7), Normalize on fc7 and
    pool6, UnPooling REP of pool6 to fc7's size, then late fusion (a score layer per branch,
    Eltwise SUM) or early fusion (Concat, one score layer)."""
    layers = trunk(rng)
    options = norm_options or {}
    local, ctx = "fc7", "pool6"
    if context:
        layers.append(Layer("pool6", "Pooling", ["fc7"], ["pool6"],
                            params={121: pool_param("AVE", global_pooling=True)}))
    if normalize:
        if context:
            layers.append(_normalize(rng, "pool6_norm", "pool6", FC, defaults=defaults,
                                     **options))
            ctx = "pool6_norm"
        layers.append(_normalize(rng, "fc7_norm", "fc7", FC, defaults=defaults, **options))
        local = "fc7_norm"
    if not context:
        layers.append(_conv(rng, "score", local, "score", FC, classes, 1, scale=0.3))
    elif fusion == "early":
        layers.append(Layer("pool6_unpool", "UnPooling", [ctx, local], ["pool6_unpool"],
                            params={133: int_field(1, 2)}))  # unpool: REP
        layers.append(Layer("concat", "Concat", ["pool6_unpool", local], ["concat"]))
        layers.append(_conv(rng, "score", "concat", "score", 2 * FC, classes, 1, scale=0.3))
    else:
        layers.append(_conv(rng, "score_fc7", local, "score_fc7", FC, classes, 1, scale=0.3))
        layers.append(_conv(rng, "score_pool6", ctx, "score_pool6", FC, classes, 1,
                            scale=0.3))
        layers.append(Layer("score_pool6_unpool", "UnPooling", ["score_pool6", "score_fc7"],
                            ["score_pool6_unpool"], params={133: int_field(1, 2)}))
        layers.append(Layer("score", "Eltwise", ["score_fc7", "score_pool6_unpool"],
                            ["score"]))
    if upsample:  # the deploy net's fixed bilinear upsampling, then a crop to the image
        kernel = np.ones((classes, 1, 16, 16), np.float32)
        layers.append(Layer("upscore", "Deconvolution", ["score"], ["upscore"], [kernel]))
        layers.append(Layer("score_crop", "Crop", ["upscore", "data"], ["score_crop"]))
        layers.append(Layer("prob", "Softmax", ["score_crop"], ["prob"]))
    return layers


# ---------------------------------------------------------------------------- forward


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, dilation: int) -> np.ndarray:
    """Caffe's Convolution (stride 1): zero padding, dilated taps (the fork's filter_stride)."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    h = xp.shape[1] - dilation * (k - 1)
    wd = xp.shape[2] - dilation * (k - 1)
    out = np.zeros((w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            patch = xp[:, i * dilation:i * dilation + h, j * dilation:j * dilation + wd]
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], patch)
    return out + b[:, None, None]


def max_pool(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Caffe's MAX Pooling: the output size rounds up, and a last window that would start
    in the padding is dropped (pooling_layer.cpp, Reshape and Forward_cpu)."""
    c, height, width = x.shape

    def size(n: int) -> int:
        pooled = int(np.ceil((n + 2 * pad - kernel) / stride)) + 1
        return pooled - 1 if pad and (pooled - 1) * stride >= n + pad else pooled

    out = np.full((c, size(height), size(width)), -np.inf)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            h0, w0 = i * stride - pad, j * stride - pad
            h1, w1 = min(h0 + kernel, height), min(w0 + kernel, width)
            out[:, i, j] = x[:, max(h0, 0):h1, max(w0, 0):w1].max(axis=(1, 2))
    return out


def normalize(x: np.ndarray, scale: np.ndarray, across_spatial: bool,
              eps: float = 1e-10) -> np.ndarray:
    """The fork's Normalize: x / sqrt(sum x^2 + eps) over C x H x W (across_spatial) or
    over C at each pixel, times the scale (one value, or one per channel)."""
    if across_spatial:
        norm = np.sqrt((x ** 2).sum() + eps)
    else:
        norm = np.sqrt((x ** 2).sum(axis=0, keepdims=True) + eps)
    s = scale.reshape(-1, 1, 1) if scale.size > 1 else scale.reshape(())
    return x / norm * s


def forward(layers: list[Layer], image: np.ndarray) -> np.ndarray:
    """The Caffe net on one C x H x W image up to the blob ``score``, in float64."""
    blobs: dict[str, np.ndarray] = {"data": image.astype(np.float64)}
    for layer in layers:
        x = [blobs[b] for b in layer.bottoms]
        if layer.type == "Convolution":
            w, b = (a.astype(np.float64) for a in layer.blobs)
            y = conv2d(x[0], w, b, layer.info["pad"], layer.info["dilation"])
        elif layer.type == "ReLU":
            y = np.maximum(x[0], 0)
        elif layer.type == "Dropout":  # test phase: identity
            y = x[0]
        elif layer.type == "Pooling" and "kernel" in layer.info:
            y = max_pool(x[0], layer.info["kernel"], layer.info["stride"], layer.info["pad"])
        elif layer.type == "Pooling":  # global AVE
            y = x[0].mean(axis=(1, 2), keepdims=True)
        elif layer.type == "Normalize":
            y = normalize(x[0], layer.blobs[0].astype(np.float64),
                          layer.info["across_spatial"])
        elif layer.type == "UnPooling":  # REP from 1 x 1 to the second bottom's size
            y = np.broadcast_to(x[0], (x[0].shape[0], *x[1].shape[1:])).copy()
        elif layer.type == "Concat":
            y = np.concatenate(x, axis=0)
        elif layer.type == "Eltwise":
            y = sum(x)
        elif layer.type == "Input":
            continue
        else:
            break  # the deploy net's upsampling: parsenet does its own
        blobs[layer.tops[0]] = y
    return blobs["score"]
