"""Which layers of a Caffe ParseNet are which parts of ``parsenet_vgg16(base="largefov")``.

The trunk is found by name (VGG-16's ``conv1_1`` ... ``conv5_3``, then ``fc6`` and ``fc7``,
the names of the authors' fc-reduced VGG-16 and of DeepLab-LargeFOV). The head is found by
following blobs back from every other convolution (a score layer) through the layers that
pass a map on unchanged at test time: ReLU, Dropout, Split, and UnPooling REP, which
replicates pool6 to the size of its second input (weiliu89/caffe branch fcn,
``src/caffe/layers/unpooling_layer.cpp``; its default, FIXED, would not). A score layer
reads fc7 (a local branch) or pool6 (a global average Pooling of fc7: the context branch),
either after a Normalize layer, or a Concat of them (early fusion); two score layers summed
by an Eltwise SUM are late fusion (ParseNet, Sec. 3.1 and Table 6).

The authors' ``parsenet_deploy.prototxt`` was not among the sources available when this
was written, so no head layer is looked up by its name: the structure above is what is
matched, and a Normalize layer that no score layer reads is refused.

Layers at test time the same as ours or not part of the model (data, loss, evaluation,
Softmax/ArgMax, and the deploy net's upsampling: a Deconvolution with fixed bilinear weights
and a Crop, which :func:`parsenet.layers.resample.resize_to_input` replaces) are passed
over and listed; any other layer type, a branch we have no part for, or a missing trunk
layer is refused in one line that names the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parsenet.convert.caffe_proto import CaffeLayer
from parsenet.errors import WeightsError

__all__ = ["TRUNK", "Branch", "Layout", "find_layout"]

TRUNK = (*(f"conv{s}_{i}" for s, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
           for i in range(1, n + 1)), "fc6", "fc7")
_PASS = {"ReLU", "Dropout", "Split", "UnPooling"}
_NOT_MODEL = {"Data", "ImageData", "Input", "DummyData", "MemoryData", "HDF5Data",
              "WindowData", "Silence", "Softmax", "SoftmaxWithLoss", "Accuracy", "ArgMax",
              "ParseOutput", "ParseEvaluate", "Crop", "Deconvolution", "InnerProduct"}
_MODEL = _PASS | {"Convolution", "Pooling", "Normalize", "Concat", "Eltwise"}


@dataclass
class Branch:
    """A map a score layer reads: ``"local"`` (fc7) or ``"context"`` (pool6), and the
    Normalize layer on it (None: not normalised)."""

    kind: str
    norm: CaffeLayer | None = None


@dataclass
class Layout:
    """The parts found: trunk convolutions in TRUNK order, the score layers with the
    branches each reads (in its input channels' order) and Eltwise coefficients."""

    trunk: list[CaffeLayer]
    scores: list[tuple[CaffeLayer, list[Branch], float]] = field(default_factory=list)
    passed_over: list[str] = field(default_factory=list)

    @property
    def branches(self) -> list[Branch]:
        return [b for _, branches, _ in self.scores for b in branches]


def _check_unpooling(layer: CaffeLayer) -> None:
    if layer.type == "UnPooling" and layer.params.get("unpool") != "REP":
        raise WeightsError(f"layer {layer.name!r}: UnPooling {layer.params.get('unpool')}; "
                           "only REP replicates pool6 over the map")


class _Net:
    def __init__(self, layers: list[CaffeLayer]) -> None:
        self.layers = layers

    def producer(self, blob: str, before: int) -> int:
        for i in range(before - 1, -1, -1):
            if blob in self.layers[i].tops:
                return i
        raise WeightsError(f"blob {blob!r}: no layer before layer "
                           f"{self.layers[before].name!r} produces it")

    def branches(self, blob: str, before: int, reader: str) -> list[Branch]:
        """The branches ``blob`` (as layer ``before`` reads it) is made of."""
        i = self.producer(blob, before)
        layer = self.layers[i]
        _check_unpooling(layer)
        if layer.type in _PASS:
            return self.branches(layer.bottoms[0], i, reader)
        if layer.type == "Normalize":
            inner = self.branches(layer.bottoms[0], i, layer.name)
            if len(inner) != 1 or inner[0].norm is not None:
                raise WeightsError(f"layer {layer.name!r}: normalises {layer.bottoms[0]!r}, "
                                   "which is not fc7 or pool6")
            return [Branch(inner[0].kind, layer)]
        if layer.type == "Concat":
            if layer.params.get("axis", 1) != 1:
                raise WeightsError(f"layer {layer.name!r}: Concat on axis "
                                   f"{layer.params['axis']}, not channels")
            return [b for bottom in layer.bottoms for b in self.branches(bottom, i, layer.name)]
        if layer.type == "Convolution" and layer.name == "fc7":
            return [Branch("local")]
        if layer.type == "Pooling" and self._is_pool6(layer, i):
            return [Branch("context")]
        raise WeightsError(f"layer {reader!r} reads {blob!r} from layer {layer.name!r} "
                           f"({layer.type}), which parsenet_vgg16 has no branch for")

    def _is_pool6(self, layer: CaffeLayer, i: int) -> bool:
        p = layer.params
        if p.get("pool") != "AVE" or not p.get("global_pooling"):
            raise WeightsError(f"layer {layer.name!r}: pool6 must be a global AVE Pooling, "
                               f"got {p.get('pool')} (global_pooling {p.get('global_pooling')})")
        return self.branches(layer.bottoms[0], i, layer.name) == [Branch("local")]


def _check_types(layers: list[CaffeLayer]) -> list[str]:
    passed = []
    for layer in layers:
        if layer.type not in _MODEL | _NOT_MODEL:
            raise WeightsError(f"layer {layer.name!r}: Caffe type {layer.type!r} has no "
                               "counterpart in parsenet_vgg16")
        if layer.type in ("Deconvolution", "InnerProduct") or (
                layer.type in _NOT_MODEL and layer.blobs):
            passed.append(f"{layer.name} ({layer.type})")
    return passed


def _trunk(layers: list[CaffeLayer]) -> list[CaffeLayer]:
    by_name = {layer.name: layer for layer in layers}
    trunk = []
    for name in TRUNK:
        layer = by_name.get(name)
        if layer is None:
            raise WeightsError(f"layer {name!r}: missing (parsenet_vgg16 needs VGG-16's "
                               f"{TRUNK[0]} ... {TRUNK[-1]})")
        if layer.type != "Convolution":
            raise WeightsError(f"layer {name!r}: is {layer.type}, expected a Convolution "
                               "(the fc-reduced VGG-16 has fc6 and fc7 as convolutions)")
        trunk.append(layer)
    return trunk


def _combination(net: _Net, scores: list[tuple[int, CaffeLayer]]) -> list[float]:
    """Eltwise coefficients of the score layers (late fusion: a SUM of two of them)."""
    if len(scores) == 1:
        return [1.0]
    tops = {s.tops[0]: k for k, (_, s) in enumerate(scores)}
    for i, layer in enumerate(net.layers):
        if layer.type != "Eltwise":
            continue
        sources = []
        for bottom in layer.bottoms:
            j = net.producer(bottom, i)
            while net.layers[j].type in _PASS:
                _check_unpooling(net.layers[j])
                j = net.producer(net.layers[j].bottoms[0], j)
            sources.append(tops.get(net.layers[j].tops[0]))
        if sorted(s for s in sources if s is not None) != list(range(len(scores))):
            continue
        if layer.params.get("operation", "SUM") != "SUM":
            raise WeightsError(f"layer {layer.name!r}: Eltwise {layer.params['operation']} of "
                               "the scores; late fusion sums them")
        coeff = layer.params.get("coeff") or [1.0] * len(sources)
        return [float(coeff[sources.index(k)]) for k in range(len(scores))]
    names = ", ".join(s.name for _, s in scores)
    raise WeightsError(f"layers {names}: several score layers, but no Eltwise SUM of them")


def find_layout(layers: list[CaffeLayer]) -> Layout:
    """The parts of ``layers`` (a net's V2 layers in order) that fill parsenet_vgg16."""
    passed = _check_types(layers)
    layout = Layout(trunk=_trunk(layers), passed_over=passed)
    net = _Net(layers)
    scores = [(i, layer) for i, layer in enumerate(layers)
              if layer.type == "Convolution" and layer.name not in TRUNK]
    if not scores:
        for layer in layers:
            if layer.type == "Normalize":
                raise WeightsError(f"layer {layer.name!r}: a Normalize layer but no score "
                                   "layer after it")
        return layout
    if len(scores) > 2:
        raise WeightsError(f"layers {', '.join(s.name for _, s in scores)}: more score "
                           "layers than fc7 and pool6 (one each) or one on their Concat")
    coeffs = _combination(net, scores)
    for (i, layer), coeff in zip(scores, coeffs, strict=True):
        branches = net.branches(layer.bottoms[0], i, layer.name)
        layout.scores.append((layer, branches, coeff))
    _check_branches(layout)
    used = {id(b.norm) for b in layout.branches}
    for layer in layers:
        if layer.type == "Normalize" and id(layer) not in used:
            raise WeightsError(f"layer {layer.name!r}: a Normalize layer that no score layer "
                               "reads")
    return layout


def _check_branches(layout: Layout) -> None:
    kinds = sorted(b.kind for b in layout.branches)
    if kinds not in (["local"], ["context", "local"]):
        names = ", ".join(s.name for s, _, _ in layout.scores)
        raise WeightsError(f"layers {names}: the scores read {kinds}; parsenet_vgg16 has "
                           "fc7 and optionally pool6, each once")
    norms = [b.norm for b in layout.branches]
    if any(n is None for n in norms) and any(n is not None for n in norms):
        named = next(n for n in norms if n is not None)
        raise WeightsError(f"layer {named.name!r}: parsenet_vgg16 normalises every branch "
                           "or none, this net normalises only some")
