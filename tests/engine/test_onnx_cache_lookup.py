"""The export cache's lookup runs on ONNX Runtime alone: a cached start does not import onnx
(which brings ml_dtypes with it) to read the checkpoint recorded in the export."""

import sys
import warnings

import pytest
import torch

from parsenet.engine.backends import make_predictor
from parsenet.engine.export import export_onnx, record_onnx_metadata
from parsenet.engine.onnx_cache import CHECKPOINT_KEY, cache_path, file_sha256, record_digest


def test_a_cached_export_is_verified_and_used_without_importing_onnx(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 3, padding=1).eval()
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"a conv")
    cache = cache_path(checkpoint, tmp_path / "cache")
    export_onnx(model, cache, sample_size=(40, 48))
    record_onnx_metadata(cache, {CHECKPOINT_KEY: file_sha256(checkpoint)})
    record_digest(cache)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError now
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an entry found unusable is warned about
        run, backend = make_predictor(model, backend="onnx", checkpoint=checkpoint,
                                      cache_dir=tmp_path / "cache")
    assert backend == "onnx" and run.path == cache
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        assert torch.allclose(run(x), model(x), atol=1e-4)
