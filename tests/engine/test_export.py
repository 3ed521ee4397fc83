import math
import os
import shutil
import warnings

import pytest
import torch
from torch import nn

from parsenet.engine.backends import OpenVinoPredictor, make_predictor
from parsenet.engine.export import (
    CHECK_SIZES,
    ChannelsLastPredictor,
    ExportCheckError,
    OnnxPredictor,
    check_export,
    export_onnx,
    export_torchscript,
    record_onnx_metadata,
)
from parsenet.engine.onnx_cache import CHECKPOINT_KEY, cache_path, file_sha256, record_digest
from parsenet.errors import UsageError
from parsenet.models import parsenet_efficientnet_lite0, parsenet_vgg16

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


class _FrozenByTrace(nn.Module):
    """Keeps the first ceil(W / 2) columns: a float ceil that a trace freezes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : math.ceil(x.shape[-1] / 2)] * 2


@pytest.mark.slow
def test_auto_exporter_keeps_the_trace_only_where_it_holds(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    lite = parsenet_efficientnet_lite0(num_classes=3).eval()
    # EfficientNet-Lite's TF-"SAME" pads are shape arithmetic the trace records.
    assert export_onnx(lite, tmp_path / "lite.onnx", sample_size=(64, 96)) == "torchscript"
    assert max(check_export(tmp_path / "lite.onnx", lite, sizes=CHECK_SIZES).values()) <= 1e-4
    frozen = _FrozenByTrace()
    with pytest.raises(ExportCheckError):
        export_onnx(frozen, tmp_path / "traced.onnx", sample_size=(64, 96),
                    exporter="torchscript")
        check_export(tmp_path / "traced.onnx", frozen, sizes=CHECK_SIZES)
    assert export_onnx(frozen, tmp_path / "auto.onnx", sample_size=(64, 96)) == "dynamo"
    check_export(tmp_path / "auto.onnx", frozen, sizes=CHECK_SIZES)


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


def _seed_cache(onnx_file, checkpoint, recorded_checkpoint=None):
    """Put ``onnx_file`` in ``checkpoint``'s cache slot, as a finished export of
    ``recorded_checkpoint`` (default: of ``checkpoint`` itself)."""
    cache = cache_path(checkpoint)
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_file, cache)
    record_onnx_metadata(cache, {CHECKPOINT_KEY: file_sha256(recorded_checkpoint or checkpoint)})
    record_digest(cache)
    return cache


def test_make_predictor_backends(model, onnx_file, tmp_path, monkeypatch):
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"stand-in checkpoint bytes")
    # Seed the cache with the fixture's export (same model): make_predictor must reuse it,
    # not export again (exporting is tested above and takes seconds).
    cache = _seed_cache(onnx_file, checkpoint)
    run, backend = make_predictor(model, backend="onnx", checkpoint=checkpoint)
    assert backend == "onnx" and isinstance(run, OnnxPredictor) and run.path == cache
    assert str(cache.parent) == os.environ["PARSENET_CACHE_DIR"]  # set by conftest
    assert list(tmp_path.iterdir()) == [checkpoint]  # nothing beside the checkpoint
    # The cache key follows the checkpoint's content.
    checkpoint.write_bytes(b"another checkpoint")
    assert cache_path(checkpoint) != cache
    eager, name = make_predictor(model, backend="eager")
    assert name == "eager" and isinstance(eager, ChannelsLastPredictor)
    x = torch.randn(1, 3, 48, 72)
    assert torch.allclose(eager(x), run(x), atol=1e-4)
    with pytest.raises(UsageError, match="backend"):
        make_predictor(model, backend="tensorrt")
    monkeypatch.setenv("PARSENET_BACKEND", "tensorrt")
    with pytest.raises(UsageError, match="PARSENET_BACKEND='tensorrt'"):
        make_predictor(model, backend="auto")


@pytest.mark.openvino
def test_auto_is_the_fastest_installed_backend(model, onnx_file, tmp_path, monkeypatch):
    import parsenet.engine.backends as backends

    monkeypatch.delenv("PARSENET_BACKEND")
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"checkpoint for auto")
    _seed_cache(onnx_file, checkpoint)
    _, chosen = make_predictor(model, backend="auto", checkpoint=checkpoint)
    if backends.openvino_available():
        # float32 on every CPU kind: bf16 on the whole graph missed the accuracy bar
        # (docs/PERFORMANCE.md), and this VGG has no measured split point for the split one
        assert chosen == "openvino-f32"
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert make_predictor(model, backend="auto", checkpoint=checkpoint)[1] == "onnx"
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    assert make_predictor(model, backend="auto", checkpoint=checkpoint)[1] == "eager"
    with pytest.raises(UsageError, match=r"pip install 'parsenet\[openvino\]'"):
        make_predictor(model, backend="openvino", checkpoint=checkpoint)


@pytest.mark.openvino
@pytest.mark.parametrize("native_bf16", ["0", "1"])
def test_openvino_backends_match_eager_and_bf16_needs_a_native_bf16_cpu(
        model, onnx_file, tmp_path, monkeypatch, native_bf16):
    pytest.importorskip("openvino")
    monkeypatch.setenv("PARSENET_CPU_BF16", native_bf16)
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"checkpoint for openvino")
    _seed_cache(onnx_file, checkpoint)
    x = torch.randn(1, 3, 57, 85)
    with torch.no_grad():
        expected = model(x)
    run, backend = make_predictor(model, backend="openvino", checkpoint=checkpoint)
    assert backend == "openvino-f32" and isinstance(run, OpenVinoPredictor)
    assert float((run(x) - expected).abs().max()) <= 1e-4
    if native_bf16 == "0":  # bf16 would be emulated: refused in one line
        with pytest.raises(UsageError, match="needs a CPU with native bf16"):
            make_predictor(model, backend="openvino-bf16", checkpoint=checkpoint)
        return
    run, backend = make_predictor(model, backend="openvino-bf16", checkpoint=checkpoint)
    assert backend == "openvino-bf16" and run.precision == "bf16"
    got = run(x)
    assert got.shape == expected.shape  # bf16 keeps 8 bits of mantissa
    assert float((got - expected).abs().max()) <= 0.1 * float(expected.abs().max())


@pytest.mark.parametrize("forged", [False, True])
def test_a_cache_entry_swapped_for_another_models_is_not_used(model, onnx_file, tmp_path,
                                                              forged):
    """Both the .onnx and its .sha256 replaced by another model's export: with its own
    checkpoint's hash inside (caught by the key) or with ours forged (caught by running it)."""
    torch.manual_seed(1)
    other = parsenet_vgg16(num_classes=3, width=0.0625, features=("conv4", "fc7")).eval()
    other_file = tmp_path / "other.onnx"
    export_onnx(other, other_file, sample_size=(64, 64))
    checkpoint, other_checkpoint = tmp_path / "ours.pt", tmp_path / "theirs.pt"
    checkpoint.write_bytes(b"our checkpoint")
    other_checkpoint.write_bytes(b"their checkpoint")
    cache = _seed_cache(other_file, checkpoint, None if forged else other_checkpoint)
    why = "is not this checkpoint's model" if forged else "exported from another checkpoint"
    with pytest.warns(UserWarning, match=why):
        run, backend = make_predictor(model, backend="onnx", checkpoint=checkpoint)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(run(x), model(x), atol=1e-4)  # exported again, from ours
    assert run.path == cache


def test_auto_backend_falls_back_to_eager_when_export_is_wrong(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import parsenet.engine.export as export_module

    def disagreeing_check(path, model, sizes=None):
        raise ExportCheckError(f"{path}: max abs difference 0.5 > 1e-4 at 57x71 (simulated)")

    # The export itself succeeds; its check against eager outputs fails.
    monkeypatch.setattr(export_module, "check_export", disagreeing_check)
    monkeypatch.delenv("PARSENET_BACKEND")
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=3, width=0.0625).eval()
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"a checkpoint")
    with pytest.warns(UserWarning, match="running eager"):
        run, backend = make_predictor(model, backend="auto", checkpoint=checkpoint)
    assert backend == "eager" and isinstance(run, ChannelsLastPredictor)
    assert not cache_path(checkpoint).exists()  # the bad export is not kept


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


@pytest.mark.parametrize(("device", "native_bf16", "openvino", "expected"), [
    ("cpu", True, True, "openvino-bf16-split"), ("cpu", False, True, "openvino"),
    ("cpu", True, False, "onnx"), ("cpu", False, False, "onnx"), ("cuda", True, True, "eager")])
def test_auto_picks_the_split_bf16_backend_only_on_native_bf16_cpus_with_openvino(
        monkeypatch, device, native_bf16, openvino, expected):
    import parsenet.engine.backends as backends

    monkeypatch.delenv("PARSENET_BACKEND")
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(backends, "openvino_available", lambda: openvino)
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: True)
    assert backends.default_backend(device) == expected


def test_parsenet_cpu_bf16_0_keeps_auto_off_bf16(monkeypatch):
    import parsenet.engine.backends as backends

    monkeypatch.delenv("PARSENET_BACKEND")
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    monkeypatch.setenv("PARSENET_CPU_BF16", "0")
    assert backends.default_backend("cpu") == "openvino"
    monkeypatch.setenv("PARSENET_CPU_BF16", "1")
    assert backends.default_backend("cpu") == "openvino-bf16-split"


def test_split_points_are_measured_for_the_released_lite_models_only():
    from parsenet.engine.openvino_split import split_point
    from parsenet.models import parsenet_efficientnet_lite1, parsenet_efficientnet_lite2

    with torch.device("meta"):
        assert split_point(parsenet_efficientnet_lite0(num_classes=3)) == "/backbone/stages.2/"
        assert split_point(parsenet_efficientnet_lite2(num_classes=3)) == "/backbone/stages.2/"
        assert split_point(parsenet_efficientnet_lite1(num_classes=3)) is None
        assert split_point(parsenet_vgg16(num_classes=3, width=0.0625)) is None


def _native_bf16_openvino():
    pytest.importorskip("openvino")
    from parsenet.engine.precision import cpu_has_native_bf16

    if not cpu_has_native_bf16():  # honours PARSENET_CPU_BF16=0
        pytest.skip("bf16 would be emulated on this CPU")


@pytest.mark.openvino
def test_split_predictor_matches_openvino_f32(model, onnx_file):
    _native_bf16_openvino()
    from parsenet.engine.openvino_split import SplitOpenVinoPredictor, SplitPointError

    x = torch.randn(1, 3, 57, 85)
    expected = OpenVinoPredictor(onnx_file, "f32")(x)
    same = SplitOpenVinoPredictor(onnx_file, "/backbone/conv2/", "f32", "f32")
    assert len(same.parts[0].outputs) >= 1  # the front hands the back conv1's output
    assert float((same(x) - expected).abs().max()) <= 1e-4  # the cut itself changes nothing
    split = SplitOpenVinoPredictor(onnx_file, "/backbone/conv2/")
    got = split(x)
    assert split.precision == "f32>bf16" and got.shape == expected.shape
    assert 0 < float((got - expected).abs().max()) <= 0.1 * float(expected.abs().max())
    with pytest.raises(SplitPointError, match="no op is named with /backbone/stages.1/"):
        SplitOpenVinoPredictor(onnx_file, "/backbone/stages.1/")


def _reaches_the_image(output) -> bool:
    seen, todo = set(), [output.get_node()]
    while todo:
        node = todo.pop()
        if node.get_type_name() == "Parameter":
            return True
        if node.get_friendly_name() not in seen:  # ids of the node wrappers get reused
            seen.add(node.get_friendly_name())
            todo.extend(i.get_source_output().get_node() for i in node.inputs())
    return False


@pytest.mark.openvino
def test_a_lite0_split_at_its_split_point_hands_over_activations_not_weights(tmp_path):
    _native_bf16_openvino()
    import openvino as ov

    from parsenet.engine.openvino_split import SplitOpenVinoPredictor, split_graph, split_point

    torch.manual_seed(0)
    lite = parsenet_efficientnet_lite0(num_classes=3, features=("stride8", "head")).eval()
    path = tmp_path / "lite0.onnx"
    export_onnx(lite, path, sample_size=(64, 64))
    front, _ = split_graph(ov.Core(), path, (split_point(lite),))
    # the depthwise kernels are reshaped weights: they must stay constants of the back
    assert front.outputs and all(_reaches_the_image(o) for o in front.outputs)
    x = torch.randn(1, 3, 70, 90)
    expected = OpenVinoPredictor(path, "f32")(x)
    same = SplitOpenVinoPredictor(path, split_point(lite), "f32", "f32")
    assert float((same(x) - expected).abs().max()) <= 1e-4


@pytest.mark.openvino
def test_make_predictor_split_backend(model, onnx_file, tmp_path, monkeypatch):
    _native_bf16_openvino()
    import parsenet.engine.backends as backends

    monkeypatch.delenv("PARSENET_BACKEND")
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"checkpoint for the split backend")
    _seed_cache(onnx_file, checkpoint)
    # no split point measured for this VGG: asked for, refused in one line; under auto,
    # float32
    with pytest.raises(UsageError, match="no split point was measured for ParseNet on VGG"):
        make_predictor(model, backend="openvino-bf16-split", checkpoint=checkpoint)
    assert make_predictor(model, backend="auto", checkpoint=checkpoint)[1] == "openvino-f32"
    monkeypatch.setattr(backends, "split_point", lambda m: "/backbone/conv3/")
    run, name = make_predictor(model, backend="auto", checkpoint=checkpoint)
    assert name == "openvino-bf16-split" and run.prefixes == ("/backbone/conv3/",)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        expected = model(x)
    assert float((run(x) - expected).abs().max()) <= 0.1 * float(expected.abs().max())
    # a split point the graph does not have: auto runs float32 (warned), asked for, refused
    monkeypatch.setattr(backends, "split_point", lambda m: "/no/such/module/")
    with pytest.warns(UserWarning, match="no op is named with /no/such/module/.*float32"):
        assert make_predictor(model, backend="auto", checkpoint=checkpoint)[1] == "openvino-f32"
    with pytest.raises(UsageError, match="the split point does not fit this model's graph"):
        make_predictor(model, backend="openvino-bf16-split", checkpoint=checkpoint)
    monkeypatch.setenv("PARSENET_CPU_BF16", "0")
    with pytest.raises(UsageError, match="openvino-bf16-split needs a CPU with native bf16"):
        make_predictor(model, backend="openvino-bf16-split", checkpoint=checkpoint)
