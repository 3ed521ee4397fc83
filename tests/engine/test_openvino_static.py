"""OpenVinoPredictor and SplitOpenVinoPredictor run an input shape that comes again on a model
compiled for that fixed shape (OpenVINO folds the export's shape arithmetic there), up to
STATIC_SHAPES of them, with the same logits as the dynamic-shape model."""

import threading

import pytest
import torch

from parsenet.engine import openvino_shapes
from parsenet.engine.backends import OpenVinoPredictor

pytestmark = pytest.mark.openvino


@pytest.fixture(scope="module")
def model_and_file(tiny_vgg_export):
    return tiny_vgg_export(3)


def test_a_shape_that_comes_again_runs_at_a_fixed_shape_with_the_same_logits(model_and_file):
    model, path = model_and_file
    run = OpenVinoPredictor(path, "f32")
    x = torch.randn(1, 3, 57, 85)
    first = run(x)  # the dynamic-shape model
    assert run.static == {}
    second = run(x)  # compiled for 1 x 3 x 57 x 85
    assert list(run.static) == [(1, 3, 57, 85)]
    assert run.compiled_for((1, 3, 57, 85)) is run.static[(1, 3, 57, 85)]
    with torch.no_grad():
        expected = model(x)
    assert float((first - expected).abs().max()) <= 1e-4
    assert float((second - expected).abs().max()) <= 1e-4


def test_at_most_static_shapes_are_compiled(model_and_file, monkeypatch):
    _, path = model_and_file
    monkeypatch.setattr(openvino_shapes, "STATIC_SHAPES", 2)
    run = OpenVinoPredictor(path, "f32")
    shapes = [(1, 3, 33 + i, 41) for i in range(4)]
    for shape in shapes * 2:
        out = run(torch.randn(shape))
        assert out.shape[-2:] == shape[-2:]
    assert list(run.static) == shapes[:2]
    assert run.compiled_for(shapes[3]) is run.compiled  # the rest stay dynamic


def test_threads_calling_at_once_get_one_compile_per_shape(model_and_file):
    _, path = model_and_file
    run = OpenVinoPredictor(path, "f32")
    x = torch.randn(1, 3, 40, 48)
    run(x)
    errors = []

    def call() -> None:
        try:
            run(x)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and list(run.static) == [(1, 3, 40, 48)]


def test_fixed_shape_models_are_not_written_to_the_compiled_model_cache(model_and_file,
                                                                         tmp_path):
    _, path = model_and_file
    cache = tmp_path / "openvino"
    run = OpenVinoPredictor(path, "f32", cache_dir=cache)
    blobs = sorted(cache.iterdir())
    assert blobs  # the dynamic-shape model is cached
    for side in (40, 41, 42):
        x = torch.randn(1, 3, side, 48)
        run(x), run(x)
    assert len(run.static) == 3 and sorted(cache.iterdir()) == blobs


def test_the_split_predictor_runs_a_shape_that_comes_again_on_fixed_shape_parts(
        model_and_file, tmp_path):
    from parsenet.engine.openvino_split import SplitOpenVinoPredictor

    model, path = model_and_file
    cache = tmp_path / "openvino"
    run = SplitOpenVinoPredictor(path, "/backbone/conv3/", "f32", "f32", cache_dir=cache)
    blobs = sorted(cache.iterdir())
    assert len(blobs) == 2  # the dynamic-shape front and back are cached
    x = torch.randn(1, 3, 57, 85)
    first = run(x)
    assert run.shapes.static == {}  # the first time: the dynamic-shape parts
    second = run(x)
    fixed = run.shapes.static[(1, 3, 57, 85)]
    assert run.compiled_for((1, 3, 57, 85)) is fixed and fixed is not run.parts
    assert [tuple(p.input(0).get_shape()) for p in fixed] == [(1, 3, 57, 85)] * 2
    with torch.no_grad():
        expected = model(x)
    assert float((first - expected).abs().max()) <= 1e-4
    assert float((second - expected).abs().max()) <= 1e-4
    assert sorted(cache.iterdir()) == blobs  # the fixed-shape parts are not cached
