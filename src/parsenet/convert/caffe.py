"""``parsenet convert caffe``: the authors' Caffe models as parsenet safetensors files.

The authors released two Caffe files (Caffe Model Zoo pages "ParseNet on PASCAL" and
"Fully convolutional reduced VGGNet"; sha1s in :data:`KNOWN_FILES`):

* ``VGG_VOC2012ext.caffemodel``, ParseNet trained on VOC 2012 train + SBD ("should obtain
  69.55 mean IoU on PASCAL 2012 segmentation val"), becomes a whole model (``kind
  model``) that ``parsenet eval --checkpoint``, ``predict`` and ``export`` load;
* ``VGG_ILSVRC_16_layers_fc_reduced.caffemodel``, the ImageNet VGG-16 with fc6 and fc7
  subsampled to 1024 channels (fc6 3x3) that ParseNet and DeepLab-LargeFOV start from,
  becomes a trunk (``kind vgg16``) for ``model.args.weights``.

No Caffe and no pickle: the binary protobuf is decoded by :mod:`parsenet.convert.wire`
with the field numbers of :mod:`parsenet.convert.caffe_proto`; the layers are matched to
``parsenet_vgg16(base="largefov")`` by :mod:`parsenet.convert.structure` and copied by
:mod:`parsenet.convert.fill`. The models are Caffe-trained VGG-16s, fed BGR pixels in
0-255 minus VGG-16's mean: that preprocessing travels in the file (``CAFFE_VGG16``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parsenet.convert.caffe_proto import CaffeLayer, read_net
from parsenet.convert.fill import check_geometry, fill_model, model_args, trunk_state
from parsenet.convert.prototxt import read_prototxt
from parsenet.convert.structure import Layout, find_layout
from parsenet.errors import UsageError, WeightsError
from parsenet.model_file import write_model_file
from parsenet.preprocessing import CAFFE_VGG16

__all__ = ["convert_caffe", "Converted", "KNOWN_FILES"]

# sha1 -> the released file (the Model Zoo readmes' "sha1:" lines).
KNOWN_FILES = {
    "99cc76c373dc522fd70f80208b30a43ab2fba2f6": "VGG_VOC2012ext.caffemodel (ParseNet on PASCAL)",
    "97eb7c469c5097f51a0f9a944f4a5731f470eee2": "VGG_ILSVRC_16_layers_fc_reduced.caffemodel",
}


@dataclass
class Converted:
    """What :func:`convert_caffe` wrote."""

    path: Path
    kind: str  # "model" or "vgg16"
    source: str  # the released file the sha1 names, else the input's file name
    num_classes: int | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    passed_over: list[str] = field(default_factory=list)


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()  # noqa: S324  (the Model Zoo identifies files by sha1)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _with_deploy(trained: list[CaffeLayer], deploy: list[CaffeLayer]) -> list[CaffeLayer]:
    """The deploy net's layers with the trained weights (by layer name, as Caffe's
    ``CopyTrainedLayersFrom``); a deploy layer's own parameters win."""
    by_name = {layer.name: layer for layer in trained}
    for layer in deploy:
        if layer.name in by_name:
            layer.blobs = by_name[layer.name].blobs
            layer.params = layer.params or by_name[layer.name].params
    return deploy


def _voc_card() -> dict[str, Any]:
    from parsenet.data.palette import voc_palette
    from parsenet.data.voc import VOC_CLASSES

    return {"classes": list(VOC_CLASSES), "palette": voc_palette(21)[:21].tolist(),
            "data": {"root": "data/VOC2012", "format": "voc", "train_split": "train_aug",
                     "val_split": "val", "crop_size": None, "holdout_every": 0}}


def _card(args: dict[str, Any], num_classes: int, source: str, sha1: str) -> dict[str, Any]:
    named = _voc_card() if num_classes == 21 else {
        "classes": [f"class_{i}" for i in range(num_classes)], "palette": None,
        "data": {"root": "data", "format": "folder", "crop_size": None}}
    config = {"name": "caffe_" + Path(source.split()[0]).stem,
              "model": {"name": "parsenet_vgg16", "args": args},
              "data": named["data"], "train": {"batch_size": 1},
              "eval": {"mode": "whole", "scales": [1.0], "flip": False}}
    return {"model": "parsenet_vgg16", "model_args": args, "classes": named["classes"],
            "palette": named["palette"], "preprocessing": CAFFE_VGG16.to_dict(),
            "config": config, "source": source, "sha1": sha1}


def _write_model(layout: Layout, layers: list[CaffeLayer], out: Path, source: str,
                 sha1: str) -> Converted:
    from parsenet.models.builders import parsenet_vgg16

    check_geometry(layers)
    args = model_args(layout)
    num_classes = int(layout.scores[0][0].blobs[0].shape[0]) if layout.scores[0][0].blobs \
        else 0
    if num_classes < 1:
        raise WeightsError(f"layer {layout.scores[0][0].name!r}: has no weights")
    model = parsenet_vgg16(num_classes=num_classes, **args)
    fill_model(model, layout)
    card = _card(args, num_classes, source, sha1)
    write_model_file(out, model.state_dict(), "model", card)
    return Converted(out, "model", source, num_classes, args, layout.passed_over)


def convert_caffe(caffemodel: str | os.PathLike, out: str | os.PathLike, *,
                  prototxt: str | os.PathLike | None = None,
                  overwrite: bool = False) -> Converted:
    """Convert ``caffemodel`` (with the net of ``prototxt``, if given) into ``out``."""
    caffemodel, out = Path(caffemodel), Path(out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: give a .safetensors path")
    if out.exists() and not overwrite:
        raise UsageError(f"--out {out}: already exists (give --overwrite to replace it)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: no folder {out.parent}")
    if not caffemodel.is_file():
        raise FileNotFoundError(f"{caffemodel}: no such file")
    _, layers = read_net(str(caffemodel))
    if prototxt is not None:
        layers = _with_deploy(layers, read_prototxt(prototxt))
    try:
        layout = find_layout(layers)
    except WeightsError as e:
        raise WeightsError(f"{prototxt or caffemodel}: {e}") from None
    sha1 = _sha1(caffemodel)
    source = KNOWN_FILES.get(sha1, caffemodel.name)
    try:
        if layout.scores:
            return _write_model(layout, layers, out, source, sha1)
        trunk = trunk_state(layout)
    except WeightsError as e:
        raise WeightsError(f"{caffemodel}: {e}") from None
    card = {"kind": "vgg16", "preprocessing": CAFFE_VGG16.to_dict(), "source": source,
            "sha1": sha1}
    write_model_file(out, trunk, "vgg16", card)
    return Converted(out, "vgg16", source, passed_over=layout.passed_over)
