"""OpenVINO hands the logits over channels-last (no reorder at the end of the graph): the
predictors return the same N x K x H x W logits as with planar output, as a channels-last
view, on the whole graph and the split one, dynamic and fixed shapes alike."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.openvino


@pytest.fixture(scope="module")
def onnx_file(tiny_vgg_export):
    return tiny_vgg_export(5)[1]


def _is_channels_last_view(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


@pytest.mark.parametrize("kind", ["whole", "split"])
def test_nhwc_logits_equal_the_planar_ones(onnx_file, kind):
    from parsenet.engine.backends import OpenVinoPredictor
    from parsenet.engine.openvino_split import SplitOpenVinoPredictor

    def build(layout):
        if kind == "whole":
            return OpenVinoPredictor(onnx_file, "f32", logits_layout=layout)
        return SplitOpenVinoPredictor(onnx_file, "/backbone/conv3/", "f32", "f32",
                                      logits_layout=layout)

    nhwc, nchw = build("NHWC"), build("NCHW")
    x = torch.randn(1, 3, 57, 83)
    for _ in range(2):  # the dynamic-shape model, then the one compiled for this shape
        got, planar = nhwc(x), nchw(x)
        assert got.shape == planar.shape == (1, 5, 57, 83)
        assert _is_channels_last_view(got) and planar.is_contiguous()
        assert torch.equal(got, planar)
        assert torch.equal(got.max(1).indices, planar.argmax(1))
    assert len(nhwc.shapes.static) == 1


def test_the_graph_ends_in_the_asked_layout(onnx_file):
    import openvino as ov

    from parsenet.engine.openvino_layout import with_logits_layout

    core = ov.Core()
    graph = with_logits_layout(core.read_model(str(onnx_file)), "NHWC")
    graph.reshape([1, 3, 64, 96])
    assert list(graph.output(0).get_shape()) == [1, 64, 96, 5]
    planar = with_logits_layout(core.read_model(str(onnx_file)), "NCHW")
    planar.reshape([1, 3, 64, 96])
    assert list(planar.output(0).get_shape()) == [1, 5, 64, 96]
    with pytest.raises(ValueError, match="logits layout must be one of"):
        with_logits_layout(graph, "HWC")


def test_outputs_that_are_not_four_dimensional_are_left_as_they_are():
    ov = pytest.importorskip("openvino")
    from parsenet.engine.openvino_layout import logits_from, with_logits_layout

    x = ov.opset13.parameter([2, 7], np.float32, name="x")
    model = ov.Model([ov.opset13.relu(x)], [x], "flat")
    assert with_logits_layout(model, "NHWC") is model
    array = np.arange(14, dtype=np.float32).reshape(2, 7)
    assert torch.equal(logits_from(array, "NHWC"), torch.from_numpy(array))
