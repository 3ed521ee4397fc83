"""Damaged and unusable .caffemodel files: one line naming the file (and the layer), exit 2,
no traceback, no memory blow-up, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from caffe_files import (
    Layer,
    encode_net,
    int_field,
    length_field,
    norm_param,
    parsenet,
    tag,
    trunk,
    varint,
)

from parsenet.cli import main


def _run(capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("parsenet: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _convert(tmp_path: Path, capsys, data: bytes, *extra: str, named: Path | None = None
             ) -> str:
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    out = tmp_path / "out.safetensors"
    err = _run(capsys, ["convert", "caffe", str(path), "--out", str(out), *extra])
    assert str(named or path) in err and not out.exists()
    return err


def _good(seed: int = 0, **kwargs) -> list[Layer]:
    return parsenet(np.random.default_rng(seed), **kwargs)


def _layer(layers: list[Layer], name: str) -> Layer:
    return next(la for la in layers if la.name == name)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "claims"),  # truncated in the middle of a layer
    (lambda b: b + tag(100, 2) + varint(2 ** 40) + b"\0" * 8, "claims 1099511627776 bytes"),
    (lambda b: b + tag(100, 2) + b"\xff" * 11, "varint longer than 10 bytes"),
    (lambda b: tag(100, 0) + varint(5) + b, "should be length-delimited"),
    (lambda b: tag(100, 3) + b, "wire type 3"),
    (lambda b: b"", "no Caffe layers"),
    (lambda b: b"\x89PNG\r\n\x1a\n" + bytes(range(40)), "not a protobuf message"),
])
def test_damaged_files(tmp_path, capsys, damage, message):
    err = _convert(tmp_path, capsys, damage(encode_net(_good())))
    assert message in err, err


def test_wrong_wire_type_inside_a_layer(tmp_path, capsys):
    layer = int_field(1, 7) + length_field(2, b"Convolution")  # the name as a number
    err = _convert(tmp_path, capsys, length_field(100, layer))
    assert "layer 0" in err and "should be length-delimited" in err


def test_blob_shape_that_does_not_hold_its_values(tmp_path, capsys):
    shape = length_field(7, length_field(1, varint(2 ** 40) + varint(2 ** 40)))
    blob = shape + length_field(5, np.ones(4, "<f4").tobytes())
    layer = length_field(1, b"conv1_1") + length_field(2, b"Convolution") + length_field(7, blob)
    err = _convert(tmp_path, capsys, length_field(100, layer))
    assert "'conv1_1'" in err and "does not hold its 4 values" in err


def test_v1_layers_are_refused(tmp_path, capsys):
    v1 = length_field(4, b"conv1_1") + int_field(5, 4)  # V1LayerParameter: name 4, type 5
    err = _convert(tmp_path, capsys, length_field(1, b"VGG") + length_field(2, v1))
    assert "V1 Caffe net" in err and "upgrade_net_proto_binary" in err


def _edited(edit) -> bytes:
    layers = _good(fusion="late", norm_options={"across_spatial": False,
                                               "channel_shared": False, "fix_scale": False})
    edit(layers)
    return encode_net(layers)


@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls.insert(3, Layer("norm1", "LRN", ["conv1_1"], ["conv1_1"])),
     "layer 'norm1': Caffe type 'LRN' has no counterpart"),
    (lambda ls: ls.remove(_layer(ls, "conv3_2")), "layer 'conv3_2': missing"),
    (lambda ls: _layer(ls, "fc7").blobs.__setitem__(0, np.ones((16, 8, 1, 1), np.float32)),
     "layer 'fc7': weights of shape [16, 8, 1, 1]"),
    (lambda ls: _layer(ls, "score_fc7").blobs.__setitem__(0, np.ones((5, 3, 1, 1),
                                                                      np.float32)),
     "layer 'score_fc7': weights of shape [5, 3, 1, 1]"),
    (lambda ls: _layer(ls, "fc6").params.__setitem__(106, int_field(4, 3) + int_field(3, 4)
                                                     + int_field(16, 4)),
     "layer 'fc6': dilation, pad, stride (4, 4, 1)"),
    (lambda ls: _layer(ls, "pool6_norm").params.__setitem__(134, norm_param(False, True,
                                                                            False)),
     "channel_shared differs"),
    (lambda ls: _layer(ls, "score").params.__setitem__(110, int_field(1, 0)),
     "layer 'score': Eltwise PROD"),
    (lambda ls: ls.remove(_layer(ls, "fc7_norm")) or setattr(_layer(ls, "score_fc7"),
                                                             "bottoms", ["fc7"]),
     "normalises every branch or none"),
    (lambda ls: _layer(ls, "score_pool6_unpool").params.clear(),
     "layer 'score_pool6_unpool': UnPooling FIXED"),
    (lambda ls: ls.insert(30, Layer("conv4_3_norm", "Normalize", ["conv4_3"],
                                    ["conv4_3_norm"], [np.ones(32, np.float32)])),
     "layer 'conv4_3_norm': a Normalize layer that no score layer reads"),
])
def test_unusable_nets_name_the_layer(tmp_path, capsys, edit, message):
    err = _convert(tmp_path, capsys, _edited(edit))
    assert message in err, err


def test_binary_file_as_prototxt(tmp_path, capsys):
    good = tmp_path / "good.caffemodel"
    good.write_bytes(encode_net(trunk(np.random.default_rng(0))))
    err = _convert(tmp_path, capsys, encode_net(trunk(np.random.default_rng(0))),
                   "--prototxt", str(good), named=good)
    assert "not UTF-8 text" in err


def test_trunk_file_given_to_eval(tmp_path, capsys):
    path = tmp_path / "vgg.caffemodel"
    path.write_bytes(encode_net(trunk(np.random.default_rng(0))))
    out = tmp_path / "vgg.safetensors"
    assert main(["convert", "caffe", str(path), "--out", str(out)]) == 0
    capsys.readouterr()
    err = _run(capsys, ["eval", "--checkpoint", str(out)])
    assert "not a whole parsenet model" in err and "model.args.weights" in err


@pytest.mark.parametrize("content", [b"garbage", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_damaged_safetensors_given_to_eval(tmp_path, capsys, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    err = _run(capsys, ["eval", "--checkpoint", str(path)])
    assert str(path) in err


def test_out_in_a_missing_folder(tmp_path, capsys):
    path = tmp_path / "vgg.caffemodel"
    path.write_bytes(encode_net(trunk(np.random.default_rng(0))))
    err = _run(capsys, ["convert", "caffe", str(path), "--out",
                        str(tmp_path / "nodir" / "vgg.safetensors")])
    assert "no folder" in err


def test_whole_model_given_as_trunk_weights(tmp_path):
    from parsenet.convert import convert_caffe
    from parsenet.errors import WeightsError
    from parsenet.models import parsenet_vgg16

    path = tmp_path / "net.caffemodel"
    path.write_bytes(encode_net(_good()))
    done = convert_caffe(path, tmp_path / "m.safetensors")
    with pytest.raises(WeightsError, match="a whole converted ParseNet.*model.init_from"):
        parsenet_vgg16(num_classes=5, width=0.0625, fc_channels=256, weights=str(done.path))
    from parsenet.engine.checkpoint import init_from_file  # what the message points to

    init_from_file(parsenet_vgg16(num_classes=5, **done.model_args), done.path)
