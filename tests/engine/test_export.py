import shutil
import warnings

import pytest
import torch

from parsenet.engine.export import (
    ChannelsLastPredictor,
    ExportCheckError,
    OnnxPredictor,
    check_export,
    export_onnx,
    export_torchscript,
    onnx_cache_path,
)
from parsenet.engine.onnx_cache import record_digest
from parsenet.engine.predictor import make_predictor
from parsenet.models import parsenet_vgg16

SIZES = ((64, 64), (57, 85))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return parsenet_vgg16(num_classes=3, width=0.0625, features=("conv4", "fc7")).eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    exporter = export_onnx(model, path, sample_size=(64, 64))
    assert exporter in ("dynamo", "torchscript")
    return path


def test_onnx_matches_eager_at_several_sizes(model, onnx_file):
    diffs = check_export(onnx_file, model, sizes=SIZES)
    assert set(diffs) == {"64x64", "57x85"}
    assert max(diffs.values()) <= 1e-4
    x = torch.randn(1, 3, 40, 100)
    out = OnnxPredictor(onnx_file, threads=1)(x)
    with torch.no_grad():
        assert torch.allclose(out, model(x), atol=1e-4)


def test_check_export_raises_on_a_different_model(model, onnx_file):
    torch.manual_seed(1)
    other = parsenet_vgg16(num_classes=3, width=0.0625, features=("conv4", "fc7")).eval()
    with pytest.raises(ExportCheckError, match="max abs difference"):
        check_export(onnx_file, other, sizes=SIZES[:1])
    with pytest.raises(FileNotFoundError):
        check_export(onnx_file.with_name("missing.onnx"), model)


def test_torchscript_matches_eager(model, tmp_path):
    path = tmp_path / "model.pt"
    model.train()
    export_torchscript(model, path, sample_size=(64, 64))
    assert model.training  # state restored
    model.eval()
    diffs = check_export(path, model, sizes=SIZES)
    assert max(diffs.values()) <= 1e-4


def test_make_predictor_backends(model, onnx_file, tmp_path):
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"stand-in checkpoint bytes")
    # Seed the cache with the fixture's export (same model): make_predictor must reuse it,
    # not export again (exporting is tested above and takes seconds).
    shutil.copy(onnx_file, onnx_cache_path(checkpoint))
    record_digest(onnx_cache_path(checkpoint))  # a cache entry is used only with its hash
    run, backend = make_predictor(model, backend="onnx", checkpoint=checkpoint)
    assert backend == "onnx" and isinstance(run, OnnxPredictor)
    cache = onnx_cache_path(checkpoint)
    assert run.path == cache and cache.is_file()
    # The cache key follows the checkpoint's content.
    checkpoint.write_bytes(b"another checkpoint")
    assert onnx_cache_path(checkpoint) != cache
    eager, name = make_predictor(model, backend="eager")
    assert name == "eager" and isinstance(eager, ChannelsLastPredictor)
    x = torch.randn(1, 3, 48, 72)
    assert torch.allclose(eager(x), run(x), atol=1e-4)
    _, auto = make_predictor(model, backend="auto", checkpoint=checkpoint)
    assert auto == "onnx"
    with pytest.raises(ValueError, match="backend"):
        make_predictor(model, backend="tensorrt")


def test_auto_backend_falls_back_to_eager_when_export_is_wrong(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import parsenet.engine.export as export_module

    def disagreeing_check(path, model, sizes=None):
        raise ExportCheckError(f"{path}: max abs difference 0.5 > 1e-4 at 57x71 (simulated)")

    # The export itself succeeds; its check against eager outputs fails.
    monkeypatch.setattr(export_module, "check_export", disagreeing_check)
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=3, width=0.0625).eval()
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"a checkpoint")
    with pytest.warns(UserWarning, match="running eager"):
        run, backend = make_predictor(model, backend="auto", checkpoint=checkpoint)
    assert backend == "eager" and isinstance(run, ChannelsLastPredictor)
    assert not onnx_cache_path(checkpoint).exists()  # the bad export is not kept


def test_a_failed_export_leaves_no_tmp_and_a_directory_is_refused(model, tmp_path,
                                                                  monkeypatch):
    adir = tmp_path / "adir"
    adir.mkdir()
    with pytest.raises(ExportCheckError, match=f"{adir}: is a directory; name the file to "
                                               f"export to, e.g. {adir}/model.pt"):
        export_torchscript(model, adir, sample_size=(32, 32))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.jit, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        export_torchscript(model, tmp_path / "m.pt", sample_size=(32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]


def test_exports_record_the_preprocessing_their_input_needs(model, onnx_file, tmp_path):
    from parsenet.engine.export import exported_preprocessing
    from parsenet.preprocessing import CAFFE_VGG

    assert exported_preprocessing(onnx_file) == model.preprocessing
    path = tmp_path / "m.pt"
    export_torchscript(model, path, sample_size=(32, 32), preprocessing=CAFFE_VGG)
    assert exported_preprocessing(path) == CAFFE_VGG  # an explicit one wins
    bare = tmp_path / "bare.pt"
    with warnings.catch_warnings():  # TorchScript's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(bare))
    assert exported_preprocessing(bare) is None  # exported without one
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(ExportCheckError, match="broken.onnx: not a readable ONNX file"):
        exported_preprocessing(broken)
