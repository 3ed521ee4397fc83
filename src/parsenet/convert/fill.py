"""Copy the weights of a Caffe ParseNet's layers into ``parsenet_vgg16``.

Caffe stores a convolution's weights as (out, in, kh, kw) and its bias as (out,), the
layout of ``nn.Conv2d``; a Normalize layer's scale (``blobs[0]``) holds one value
(``channel_shared``) or one per channel (weiliu89/caffe branch fcn,
``src/caffe/layers/normalize_layer.cpp``), our L2Norm's ``weight`` reshaped. A shape that
does not fit is refused in one line naming the Caffe layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from parsenet.convert.caffe_proto import CaffeLayer
from parsenet.convert.structure import TRUNK, Layout
from parsenet.errors import WeightsError

__all__ = ["trunk_state", "model_args", "check_geometry", "fill_model"]

# Caffe's Normalize default eps (NormalizeParameter.eps), also L2Norm's.
CAFFE_EPS = 1e-10
# parsenet_vgg16(base="largefov"): dilation of each trunk conv (conv5: 2, fc6: 12).
_DILATION = {name: 2 if name.startswith("conv5") else 12 if name == "fc6" else 1
             for name in TRUNK}
_POOLS = {"pool1": 2, "pool2": 2, "pool3": 2, "pool4": 1, "pool5": 1}  # 3x3, pad 1, MAX


def _weights(layer: CaffeLayer) -> tuple[np.ndarray, np.ndarray | None]:
    if not layer.blobs:
        raise WeightsError(f"layer {layer.name!r}: has no weights in the .caffemodel")
    w = layer.blobs[0]
    if w.ndim == 2:  # an InnerProduct-shaped blob of a 1x1 convolution
        w = w.reshape(*w.shape, 1, 1)
    if w.ndim != 4:
        raise WeightsError(f"layer {layer.name!r}: weights of shape {list(w.shape)}, "
                           "expected out x in x kh x kw")
    b = layer.blobs[1].reshape(-1) if len(layer.blobs) > 1 else None
    return w, b


def trunk_state(layout: Layout) -> dict[str, torch.Tensor]:
    """The trunk in the flat layout VGG16Weights loads: ``conv{k}.weight``/``.bias``
    (k = 0..12), ``fc6.*``, ``fc7.*``."""
    out = {}
    for k, layer in enumerate(layout.trunk):
        w, b = _weights(layer)
        if b is None:
            raise WeightsError(f"layer {layer.name!r}: has no bias blob")
        key = layer.name if layer.name in ("fc6", "fc7") else f"conv{k}"
        out[f"{key}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        out[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(b))
    return out


def check_geometry(layers: list[CaffeLayer]) -> None:
    """The trunk's kernels, dilations, paddings and pools are LargeFOV's (when the file
    records them), so that the converted model computes what the Caffe net did."""
    for layer in layers:
        p = layer.params
        if layer.name in _DILATION and p:
            k = layer.blobs[0].shape[-1] if layer.blobs else p.get("kernel")
            d = _DILATION[layer.name]
            want = (d, d * (k - 1) // 2, 1)
            have = (p.get("dilation", 1), p.get("pad", 0), p.get("stride", 1))
            if have != want:
                raise WeightsError(f"layer {layer.name!r}: dilation, pad, stride {have} in the "
                                   f"Caffe net; parsenet_vgg16(base=largefov) has {want}")
        elif layer.name in _POOLS and p:
            want_pool = ("MAX", 3, _POOLS[layer.name], 1)
            have_pool = (p.get("pool"), p.get("kernel"), p.get("stride"), p.get("pad"))
            if have_pool != want_pool:
                raise WeightsError(f"layer {layer.name!r}: pool, kernel, stride, pad "
                                   f"{have_pool} in the Caffe net; parsenet_vgg16("
                                   f"base=largefov) has {want_pool}")


def _norm_options(layout: Layout) -> dict[str, Any]:
    norms = [b.norm for b in layout.branches if b.norm is not None]
    if not norms:
        return {"normalize": False}
    for key in ("channel_shared", "fix_scale"):
        values = {n.params[key] for n in norms}
        if len(values) > 1:
            raise WeightsError(f"layer {norms[0].name!r}: {key} differs between the Normalize "
                               "layers; parsenet_vgg16 sets it once for all branches")
    for n in norms:
        if not math.isclose(n.params["eps"], CAFFE_EPS, rel_tol=1e-4):
            raise WeightsError(f"layer {n.name!r}: eps {n.params['eps']:g}, parsenet_vgg16's "
                               f"L2Norm adds {CAFFE_EPS:g}")
    # pool6 is one cell per image: across_spatial makes no difference there.
    local = next(b.norm for b in layout.branches if b.kind == "local")
    return {"normalize": True, "norm_channel_shared": norms[0].params["channel_shared"],
            "norm_across_spatial": local.params["across_spatial"],
            "learn_scale": not norms[0].params["fix_scale"]}


def model_args(layout: Layout) -> dict[str, Any]:
    """``parsenet_vgg16`` keyword arguments (besides ``num_classes``) of the Caffe net."""
    conv1 = layout.trunk[0].blobs[0].shape[0] if layout.trunk[0].blobs else 64
    width = conv1 / 64
    fc = layout.trunk[-1].blobs[0].shape[0] if layout.trunk[-1].blobs else 1024
    args: dict[str, Any] = {"base": "largefov", "features": ["fc7"], "pool_ceil": True,
                            "width": width, "fc_channels": int(round(fc / width)),
                            "context": any(b.kind == "context" for b in layout.branches),
                            "fusion": "early" if len(layout.branches) > len(layout.scores)
                            else "late", "context_dropout": 0.0}
    return args | _norm_options(layout)


def _copy(param: torch.Tensor, value: np.ndarray, layer: str) -> None:
    if value.size != param.numel() or (value.ndim == param.ndim and
                                       tuple(value.shape) != tuple(param.shape)):
        raise WeightsError(f"layer {layer!r}: weights of shape {list(value.shape)}, "
                           f"parsenet_vgg16 expects {list(param.shape)}")
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(param.shape))


def _fill_scores(model: nn.Module, layout: Layout) -> None:
    head = model.head
    if head.mode == "late":
        order = {"local": 0, "context": 1}
        for layer, branches, coeff in layout.scores:
            w, b = _weights(layer)
            conv = head.classifiers[order[branches[0].kind]]
            _copy(conv.weight, w * coeff, layer.name)
            _copy(conv.bias, (b if b is not None else np.zeros(w.shape[0])) * coeff, layer.name)
        return
    layer, branches, coeff = layout.scores[0]
    w, b = _weights(layer)
    sizes = [head.local_channels[0] if br.kind == "local" else head.context_channels[0]
             for br in branches]
    if sum(sizes) != w.shape[1]:
        raise WeightsError(f"layer {layer.name!r}: reads {w.shape[1]} channels, fc7 and pool6 "
                           f"give {sum(sizes)}")
    parts = dict(zip((br.kind for br in branches), np.split(w, np.cumsum(sizes)[:-1], axis=1),
                     strict=True))
    _copy(head.classifier.weight, np.concatenate([parts["local"], parts["context"]], axis=1),
          layer.name)
    _copy(head.classifier.bias, b if b is not None else np.zeros(w.shape[0]), layer.name)


def fill_model(model: nn.Module, layout: Layout) -> None:
    """Copy every Caffe weight of ``layout`` into ``model`` (a parsenet_vgg16 built with
    :func:`model_args`)."""
    convs = [*model.backbone.conv_layers(), *model.backbone.fc_layers()]
    for layer, conv in zip(layout.trunk, convs, strict=True):
        w, b = _weights(layer)
        _copy(conv.weight, w, layer.name)
        if b is None:
            raise WeightsError(f"layer {layer.name!r}: has no bias blob")
        _copy(conv.bias, b, layer.name)
    for branch in layout.branches:
        if branch.norm is None:
            continue
        if not branch.norm.blobs:
            raise WeightsError(f"layer {branch.norm.name!r}: has no scale blob")
        norm = (model.head.norms[0] if branch.kind == "local" else model.context.norms[0])
        _copy(norm.weight, branch.norm.blobs[0], branch.norm.name)
    _fill_scores(model, layout)
