"""FixedShapes: the dynamic model for a shape's first call, then one compiled for the shape,
at most STATIC_SHAPES of them (no OpenVINO needed: the compile is a stand-in)."""

from parsenet.engine import openvino_shapes
from parsenet.engine.openvino_shapes import FixedShapes


def _counting():
    compiled = []

    def compile_at(shape):
        compiled.append(shape)
        return f"fixed {shape}"

    return FixedShapes(compile_at), compiled


def test_a_shape_is_compiled_on_its_second_call_and_reused_after():
    shapes, compiled = _counting()
    a = (1, 3, 8, 8)
    assert shapes.get(a, "dynamic") == "dynamic" and compiled == []
    assert shapes.get(a, "dynamic") == "fixed (1, 3, 8, 8)"
    assert shapes.get(a, "dynamic") == "fixed (1, 3, 8, 8)" and compiled == [a]


def test_past_the_limit_shapes_stay_dynamic(monkeypatch):
    monkeypatch.setattr(openvino_shapes, "STATIC_SHAPES", 2)
    shapes, compiled = _counting()
    sizes = [(1, 3, 8, 8 + i) for i in range(3)]
    for shape in sizes * 3:
        shapes.get(shape, "dynamic")
    assert compiled == sizes[:2] and list(shapes.static) == sizes[:2]
    assert shapes.get(sizes[2], "dynamic") == "dynamic"


def test_a_stream_of_new_shapes_is_forgotten_past_a_bound(monkeypatch):
    monkeypatch.setattr(openvino_shapes, "_FORGET_AFTER", 3)
    shapes, compiled = _counting()
    for i in range(4):  # the fourth new shape clears the three seen before it
        shapes.get((1, 3, 8, i), "dynamic")
    assert shapes.get((1, 3, 8, 0), "dynamic") == "dynamic"  # seen once more, not compiled
    assert shapes.get((1, 3, 8, 3), "dynamic") == "fixed (1, 3, 8, 3)" and compiled == [
        (1, 3, 8, 3)]
