"""parsenet convert caffe: tiny Caffe ParseNets written by the test, converted, and run
against a NumPy forward of the Caffe net (Caffe's layer semantics) to 1e-5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_files import FC, encode_net, forward, int_field, parsenet, trunk

from parsenet.convert import convert_caffe
from parsenet.engine.checkpoint import load_model
from parsenet.errors import WeightsError
from parsenet.models import parsenet_vgg16
from parsenet.preprocessing import CAFFE_VGG16

TOL = 1e-5


def _write(tmp_path: Path, layers, name: str = "net.caffemodel") -> Path:
    path = tmp_path / name
    path.write_bytes(encode_net(layers))
    return path


def _compare(layers, model: torch.nn.Module, size: tuple[int, int], seed: int = 1) -> None:
    """Stride-8 scores equal the Caffe net's (float64 NumPy) to 1e-5 of the largest score
    (float32 here: about 5e-6 absolute on the normalised nets, whose scores reach ~9); the
    full-size logits at each cell's centre pixel (8i, 8j) equal the cell's score (the grid
    the upsampling is aligned to)."""
    image = np.random.default_rng(seed).normal(0, 30, (3, *size)).astype(np.float32)
    expected = forward(layers, image)
    x = torch.from_numpy(image)[None]
    model.eval()
    with torch.no_grad():
        scores = model.head(*model.forward_branches(x))[0].double().numpy()
        logits = model(x)[0].double().numpy()
    assert scores.shape == expected.shape
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOL * max(1, np.abs(expected).max()))
    centres = logits[:, ::8, ::8]
    np.testing.assert_allclose(centres, expected[:, :centres.shape[1], :centres.shape[2]],
                               rtol=0, atol=TOL * max(1, np.abs(expected).max()))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("fusion", ["late", "early"])
def test_paper_normalize_per_pixel_learned_scale(tmp_path, rng, fusion, one_thread):
    layers = parsenet(rng, fusion=fusion, norm_options={"across_spatial": False,
                                                        "channel_shared": False,
                                                        "fix_scale": False})
    done = convert_caffe(_write(tmp_path, layers), tmp_path / "m.safetensors")
    assert (done.kind, done.num_classes) == ("model", 5)
    assert done.model_args["fusion"] == fusion and done.model_args["learn_scale"] is True
    model = load_model(done.path).model
    norm = model.head.norms[0]
    assert (norm.across_spatial, norm.channel_shared) == (False, False)
    assert isinstance(norm.weight, torch.nn.Parameter) and norm.weight.shape == (1, FC, 1, 1)
    for size in ((37, 50), (64, 41)):  # odd and even sides: Caffe's ceil rounding matters
        _compare(layers, model, size)


def test_caffe_default_normalize_across_spatial_shared(tmp_path, rng, one_thread):
    layers = parsenet(rng, fusion="early", defaults=True)  # no norm_param at all
    pool6 = next(la for la in layers if la.name == "pool6")
    pool6.params[121] = int_field(1, 1) + int_field(13, 1)  # AVE into the fork's 1 bin
    done = convert_caffe(_write(tmp_path, layers), tmp_path / "m.safetensors")
    model = load_model(done.path).model
    norm = model.head.norms[0]
    assert (norm.across_spatial, norm.channel_shared) == (True, True)
    assert not isinstance(norm.weight, torch.nn.Parameter)  # fix_scale: not learned
    assert float(norm.weight) == pytest.approx(float(layers[-4].blobs[0]))
    _compare(layers, model, (48, 45))


def test_baseline_and_the_deploy_nets_upsampling(tmp_path, rng, one_thread, capsys):
    from parsenet.cli import main

    layers = parsenet(rng, context=False, normalize=False, classes=21, upsample=True)
    path = _write(tmp_path, layers)
    assert main(["convert", "caffe", str(path), "--out", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "21 classes" in out and "upscore (Deconvolution)" in out
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.preprocessing == CAFFE_VGG16
    assert loaded.classes[:2] == ("background", "aeroplane") and len(loaded.palette) == 21
    assert loaded.config.data.format == "voc" and loaded.model.context is None
    _compare(layers, loaded.model, (41, 40))


def test_trunk_converts_to_training_weights(tmp_path, rng):
    layers = trunk(rng)
    layers.append(layers[-1].__class__("fc8", "InnerProduct", ["fc7"], ["fc8"],
                                       [np.ones((10, FC), np.float32)]))
    done = convert_caffe(_write(tmp_path, layers), tmp_path / "vgg.safetensors")
    assert done.kind == "vgg16" and done.passed_over == ["fc8 (InnerProduct)"]
    model = parsenet_vgg16(num_classes=3, width=0.0625, fc_channels=256,
                           weights=str(done.path))
    assert model.preprocessing == CAFFE_VGG16
    caffe = {layer.name: layer for layer in layers}
    fc6, fc7 = model.backbone.fc_layers()
    torch.testing.assert_close(fc6.weight, torch.from_numpy(caffe["fc6"].blobs[0]))
    torch.testing.assert_close(fc7.bias, torch.from_numpy(caffe["fc7"].blobs[1]))
    conv = model.backbone.conv_layers()[8]  # conv4_2
    torch.testing.assert_close(conv.weight, torch.from_numpy(caffe["conv4_2"].blobs[0]))
    with pytest.raises(WeightsError, match="model expects"):  # another base: one line
        parsenet_vgg16(num_classes=3, width=0.0625, fc_channels=256, base="deeplab",
                       weights=str(done.path))


def test_prototxt_gives_the_layer_parameters(tmp_path, rng, one_thread):
    layers = parsenet(rng, fusion="late", norm_options={"across_spatial": False,
                                                       "channel_shared": False,
                                                       "fix_scale": False})
    stripped = [type(la)(la.name, la.type, la.bottoms, la.tops, la.blobs) for la in layers]
    text = []
    for la in layers:
        body = [f'name: "{la.name}"', f'type: "{la.type}"']
        body += [f'bottom: "{b}"' for b in la.bottoms] + [f'top: "{t}"' for t in la.tops]
        if la.type == "Convolution":
            k = la.blobs[0].shape[-1]
            d = la.info["dilation"]
            body.append(f"convolution_param {{ num_output: {la.blobs[0].shape[0]} "
                        f"kernel_size: {k} pad: {la.info['pad']} filter_stride: {d} }}")
        elif la.type == "Pooling" and "kernel" in la.info:
            body.append(f"pooling_param {{ pool: MAX kernel_size: 3 stride: "
                        f"{la.info['stride']} pad: 1 }}")
        elif la.type == "Pooling":
            body.append("pooling_param { pool: AVE bin_size: 1 }")
        elif la.type == "UnPooling":
            body.append("unpooling_param { unpool: REP }")
        elif la.type == "Normalize":
            body.append("norm_param { across_spatial: false channel_shared: false "
                        "fix_scale: false scale_filler { type: \"constant\" value: 10 } }")
        text.append("layer {\n  " + "\n  ".join(body) + "\n}  # " + la.name)
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text('name: "ParseNet"\n' + "\n".join(text) + "\n")
    done = convert_caffe(_write(tmp_path, stripped), tmp_path / "m.safetensors",
                         prototxt=deploy)
    _compare(layers, load_model(done.path).model, (33, 40))


def test_output_is_not_replaced_unless_asked(tmp_path, rng):
    path = _write(tmp_path, trunk(rng))
    out = tmp_path / "vgg.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(Exception, match="already exists"):
        convert_caffe(path, out)
    assert out.read_bytes() == b"keep me"
    convert_caffe(path, out, overwrite=True)
    assert out.read_bytes() != b"keep me"


def _folder_dataset(root: Path, classes: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, (h, w) in enumerate(((40, 56), (45, 33))):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                root / "images" / split / f"im{i}.png")
            label = rng.integers(0, classes, (h, w)).astype(np.uint8)
            Image.fromarray(label).save(root / "labels" / split / f"im{i}.png")
    (root / "classes.txt").write_text("\n".join(f"class_{i}" for i in range(classes)) + "\n")


def test_converted_model_evaluates_and_predicts(tmp_path, rng, capsys):
    from parsenet.cli import main

    layers = parsenet(rng, fusion="late")
    path = _write(tmp_path, layers)
    model_file = tmp_path / "m.safetensors"
    assert main(["convert", "caffe", str(path), "--out", str(model_file)]) == 0
    _folder_dataset(tmp_path / "data", 5)
    assert main(["eval", "--checkpoint", str(model_file), "--data-root",
                 str(tmp_path / "data"), "--split", "val", "--no-progress"]) == 0
    assert "mean IoU" in capsys.readouterr().out
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "data" / "images" / "val" / "im1.png"),
                 "--checkpoint", str(model_file), "--out", str(out), "--no-progress"]) == 0
    assert (out / "im1.png").is_file()


def test_trunk_as_the_configs_weights(tmp_path, rng):
    from parsenet.config import ModelConfig
    from parsenet.models.weights import weights_enum_of
    from parsenet.recipe import build_model_from_config

    layers = trunk(rng)
    done = convert_caffe(_write(tmp_path, layers), tmp_path / "vgg.safetensors")
    config = ModelConfig(name="parsenet_vgg16", args={
        "weights": str(done.path), "width": 0.0625, "fc_channels": 256, "context": True})
    entry = weights_enum_of("parsenet_vgg16").verify(config.args["weights"])
    assert entry.preprocessing == CAFFE_VGG16 and "fc7" in entry.fills
    model = build_model_from_config(config, num_classes=21)
    conv1 = model.backbone.conv_layers()[0]
    torch.testing.assert_close(conv1.bias, torch.from_numpy(layers[1].blobs[1]))


def test_later_caffe_field_numbers(tmp_path, rng, one_thread):
    """BVLC Caffe's numbers: dilation in ConvolutionParameter 18, norm_param 145,
    unpooling_param 146 (the fork's are 16, 134, 133)."""
    layers = parsenet(rng, fusion="late", norm_options={"across_spatial": False,
                                                       "channel_shared": False,
                                                       "fix_scale": False})
    for la in layers:
        if la.type == "Convolution" and la.info.get("dilation", 1) > 1:
            k, d = la.blobs[0].shape[-1], la.info["dilation"]
            la.params[106] = (int_field(1, la.blobs[0].shape[0]) + int_field(4, k)
                              + int_field(3, la.info["pad"]) + int_field(18, d))
        for old, new in ((134, 145), (133, 146)):
            if old in la.params:
                la.params[new] = la.params.pop(old)
    done = convert_caffe(_write(tmp_path, layers), tmp_path / "m.safetensors")
    _compare(layers, load_model(done.path).model, (40, 37))
