"""OpenVINO's compiled-model cache: a second predictor of a graph imports the compiled model
from the cache folder instead of compiling it, and nothing is written anywhere else."""

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from parsenet.engine.export import export_onnx

pytestmark = pytest.mark.openvino
SPLIT_AT = "/conv2/"  # the traced export names ops after the modules: /conv1/Conv, /conv2/Conv


class _TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    return _TwoConvs().eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export_onnx(model, path, sample_size=(40, 48))
    return path


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _from_cache(run) -> list[bool]:
    compiled = getattr(run, "parts", None) or [run.compiled]
    return [bool(part.get_property("LOADED_FROM_CACHE")) for part in compiled]


def _predictors(onnx_file, cache_dir):
    from parsenet.engine.backends import OpenVinoPredictor
    from parsenet.engine.openvino_split import SplitOpenVinoPredictor

    # f32 on both sides of the split: runs on any CPU (bf16 needs a native-bf16 one)
    return {"openvino": lambda: OpenVinoPredictor(onnx_file, "f32", cache_dir=cache_dir),
            "split": lambda: SplitOpenVinoPredictor(onnx_file, SPLIT_AT, "f32", "f32",
                                                    cache_dir=cache_dir)}


@pytest.mark.parametrize("kind", ["openvino", "split"])
def test_a_second_predictor_imports_the_compiled_model_from_the_cache(
        onnx_file, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    build = _predictors(onnx_file, cache)[kind]
    x = torch.randn(1, 3, 33, 47)
    first = build()
    blobs = _files(cache)
    assert _from_cache(first) == [False] * len(_from_cache(first))
    assert blobs and all(p.suffix == ".blob" for p in blobs)
    assert len(blobs) == len(_from_cache(first))  # one per compiled part
    second = build()
    assert all(_from_cache(second)) and _files(cache) == blobs
    assert torch.equal(second(x), first(x))
    assert _files(tmp_path) == blobs  # nothing beside the cache (the working folder included)


@pytest.mark.parametrize("kind", ["openvino", "split"])
def test_without_a_cache_folder_nothing_is_written(onnx_file, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    run = _predictors(onnx_file, None)[kind]()
    assert not any(_from_cache(run)) and not _files(tmp_path)


def test_a_corrupt_compiled_model_is_compiled_again(onnx_file, model, tmp_path):
    cache = tmp_path / "cache"
    build = _predictors(onnx_file, cache)["openvino"]
    build()
    for blob in _files(cache):
        blob.write_bytes(blob.read_bytes()[: os.path.getsize(blob) // 2])  # truncated
    run = build()
    assert _from_cache(run) == [False]
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        assert torch.allclose(run(x), model(x), atol=1e-4)
    assert all(_from_cache(build()))  # and cached afresh


def test_make_predictor_caches_compiled_models_beside_the_exports(model, tmp_path,
                                                                    monkeypatch):
    from parsenet.engine.backends import make_predictor
    from parsenet.engine.onnx_cache import compiled_cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PARSENET_CACHE_DIR", str(tmp_path / "default"))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"two convs")
    cache = tmp_path / "cache"
    first, name = make_predictor(model, backend="openvino", checkpoint=checkpoint,
                                 cache_dir=cache)
    assert name == "openvino-f32" and _from_cache(first) == [False]
    second, _ = make_predictor(model, backend="openvino", checkpoint=checkpoint,
                               cache_dir=cache)
    assert _from_cache(second) == [True]
    blobs = _files(compiled_cache_dir(cache))
    assert blobs and compiled_cache_dir(cache) == cache / "openvino"
    # the checkpoint, the export and its digest, the compiled model: nothing else
    assert _files(tmp_path) - blobs - {checkpoint} == _files(cache) - blobs
    assert {p.suffix for p in _files(cache) - blobs} == {".onnx", ".sha256"}
