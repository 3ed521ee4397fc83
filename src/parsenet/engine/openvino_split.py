"""OpenVINO in bf16 with the input end of the graph kept in float32: the ``openvino-bf16-split``
backend.

The ONNX export is cut in two at the first op whose name starts with a prefix (op names
follow the module tree: ``/backbone/stem/``, ``/backbone/stages.N/``, ``/head/``,
``/context/``); every op from there on, and everything that depends on it, is the *back*
part, the rest the *front*. Each part is compiled with its own ``INFERENCE_PRECISION_HINT``:
front float32, back bf16. The bf16 error that flips labels enters at the input end, not at
the classifier, so keeping the stem and the first stages in float32 keeps the labels at
most of bf16's speed.

Measured with ``lab/tools/openvino_split_precision.py`` (12 val images spread over the
split, the release's eval mode; agreement = share of pixels labelled as eager fp32 labels
them; OpenVINO 2026.4.1, AMD EPYC with AVX512-BF16 and no AMX; ``stages.N`` is the prefix
``/backbone/stages.N/``: the stem and the stages before it stay float32)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python -m lab.tools.openvino_split_precision \\
        siftflow bf16 "f32>bf16@/backbone/stages.1/" "f32>bf16@/backbone/stages.2/" \\
        --val-images 12                         (and camvid, stanford)

                     eager fp32   all bf16          stages.1          stages.2
    camvid (Lite0)   59.80        98.857% -0.23     99.686% -0.02     99.764% -0.01
    stanford (Lite0) 71.75        99.515% +0.06     99.731% +0.03     99.784% +0.04
    siftflow (Lite2) 36.85        97.427% +0.54     99.026% +0.17     99.136% -0.03

``stages.2`` holds the bar (within 0.3 of eager fp32's mean IU, >= 99% of pixels alike) on
all three with a margin; ``stages.1`` only just on siftflow (99.026%, 12 images), so both
architectures split at ``stages.2``. An Intel Xeon with AMX gave camvid figures of the same
size (the lab tool's docstring). Speed, a rough check on that EPYC shared with other jobs
(15 interleaved rounds, 2 threads; ms, OpenVINO fp32 / split at stages.2 / all bf16):
camvid 360 x 480 119 / 97 / 64, siftflow 512 x 512 397 / 313 / 302; the figure to trust
is the ``released`` benchmark's ``OpenVINO bf16 split`` row from an idle machine.

The split point is chosen per released architecture (:data:`SPLIT_POINTS`, keyed on the
EfficientNet-Lite variant); other architectures have none measured, so ``auto`` runs them in
float32 and ``--backend openvino-bf16-split`` refuses them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from parsenet.engine.export import usable_cores
from parsenet.engine.openvino_layout import logits_from, with_logits_layout
from parsenet.engine.openvino_shapes import FixedShapes
from parsenet.errors import UsageError

__all__ = ["SPLIT_BACKEND", "SPLIT_POINTS", "split_point", "split_graph",
           "SplitOpenVinoPredictor", "SplitPointError", "compile_cache_config"]

SPLIT_BACKEND = "openvino-bf16-split"
# EfficientNet-Lite variant -> where bf16 starts (the module docstring's figures): the stem
# and the first two stages stay float32; one point for both, as it holds the bar on both.
SPLIT_POINTS: dict[str, str] = {"lite0": "/backbone/stages.2/", "lite2": "/backbone/stages.2/"}
_PRECISIONS = ("f32", "bf16")


class SplitPointError(UsageError):
    """The graph has no op at the split point (another architecture or exporter)."""


def split_point(model: nn.Module) -> str | None:
    """The op-name prefix where ``model``'s graph turns bf16, or None where none was measured
    for its architecture."""
    from parsenet.backbones.efficientnet_lite import EfficientNetLite

    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, EfficientNetLite):
        return None
    return SPLIT_POINTS.get(backbone.variant)


def compile_cache_config(cache_dir: str | os.PathLike | None) -> dict[str, str]:
    """The ``compile_model`` options that cache compiled models in ``cache_dir`` (OpenVINO's
    ``CACHE_DIR``; it makes the folder); none for None. Compiling is most of a predictor's
    start-up; importing a cached one skips OpenVINO's graph transformations."""
    return {} if cache_dir is None else {"CACHE_DIR": str(cache_dir)}


def split_graph(core: Any, path: str | os.PathLike | Any, prefixes: Sequence[str]
                ) -> tuple[Any, Any]:
    """(front, back) OpenVINO models of the graph at ``path`` (or of an ``ov.Model``, which
    is changed): the back holds the first op named with one of ``prefixes`` and everything
    that depends on it; it takes the image (for the output size) and then the front's
    outputs, in order."""
    import openvino as ov

    model = path if isinstance(path, ov.Model) else core.read_model(str(path))
    image = model.get_parameters()[0]
    ops = model.get_ordered_ops()  # topological order: sources come first
    by_name = {op.get_friendly_name(): op for op in ops}
    tail: set[str] = set()
    varying = {image.get_friendly_name()}  # what depends on the image, not weights alone
    for op in ops:
        if op.get_type_name() in ("Constant", "Result"):
            continue
        sources = {i.get_source_output().get_node().get_friendly_name() for i in op.inputs()}
        if not varying.isdisjoint(sources):
            varying.add(op.get_friendly_name())
        if op.get_friendly_name().startswith(tuple(prefixes)) or not tail.isdisjoint(sources):
            tail.add(op.get_friendly_name())
    if not tail:
        raise SplitPointError(f"{path}: no op is named with {' or '.join(prefixes)}: the split "
                              f"point does not fit this model's graph")
    cuts: dict[tuple[str, int], list] = {}
    # In graph order, not the set's (which differs from process to process): the parts then
    # take and give their tensors in the same order in every process, as OpenVINO's
    # compiled-model cache needs to find them under the same hash.
    for name in [op.get_friendly_name() for op in ops if op.get_friendly_name() in tail]:
        for target in by_name[name].inputs():
            source = target.get_source_output()
            node = source.get_node()
            # Weights (and what is computed from weights alone, e.g. a reshaped depthwise
            # kernel) stay constants of the back: as its inputs they would be repacked (and
            # converted to bf16) on every call.
            if node.get_friendly_name() not in varying or node.get_type_name() == "Parameter" \
                    or node.get_friendly_name() in tail:
                continue
            cuts.setdefault((node.get_friendly_name(), source.get_index()), []).append(target)
    if not cuts:
        raise SplitPointError(f"{path}: the whole graph is at or after {prefixes}: nothing "
                              f"is left for the front")
    outputs = [by_name[name].output(index) for name, index in cuts]
    front = ov.Model(outputs, [image], "front").clone()
    parameters = [image]
    for output, (name, index), targets in zip(outputs, cuts, cuts.values(), strict=True):
        # Named after the front output it takes: an automatic name counts the nodes made
        # before it in the process, and the cache's hash covers names.
        parameter = ov.opset13.parameter(output.get_partial_shape(), output.get_element_type(),
                                         name=f"{name}:{index}")
        for target in targets:
            target.replace_source_output(parameter.output(0))
        parameters.append(parameter)
    return front, ov.Model(model.get_results(), parameters, "back")


class SplitOpenVinoPredictor:
    """The graph at ``path`` split at ``prefixes`` (:func:`split_graph`), front and back
    compiled at their own precision, called like a model: 1 x 3 x H x W tensor -> logits.

    Args:
        path: an ``.onnx`` file (or OpenVINO IR ``.xml``).
        prefixes: the split point: op-name prefix(es), e.g. ``/backbone/stages.1/``.
        front, back: ``f32`` or ``bf16`` (``INFERENCE_PRECISION_HINT`` of each part).
        threads: inference threads (default: the CPU cores this process may use).
        cache_dir: a folder for OpenVINO's compiled-model cache (``CACHE_DIR``; each part is
            cached under a hash of its graph and options); None: nothing is written.
        logits_layout: how the back hands over the logits: ``NHWC`` (a channels-last view,
            :mod:`~parsenet.engine.openvino_layout`) or ``NCHW``.
    """

    def __init__(self, path: str | os.PathLike, prefixes: str | Sequence[str],
                 front: str = "f32", back: str = "bf16", threads: int | None = None, *,
                 cache_dir: str | os.PathLike | None = None,
                 logits_layout: str = "NHWC") -> None:
        import openvino as ov

        if front not in _PRECISIONS or back not in _PRECISIONS:
            raise UsageError(f"OpenVINO precisions must be f32 or bf16, got {front!r} > "
                             f"{back!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        self.path, self.precision = Path(path), f"{front}>{back}"
        self.prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
        self.core = ov.Core()  # kept: the compiled models are released before their core
        self.hints = (front, back)
        # Fixed-shape parts are compiled without CACHE_DIR: a blob per image size would pile up
        # there, run after run.
        self.fixed_config = {"PERFORMANCE_HINT": "LATENCY",
                             "INFERENCE_NUM_THREADS": threads or usable_cores()}
        self.logits_layout = logits_layout
        # split_graph changes what it is given: each split takes a clone.
        self.graph = with_logits_layout(self.core.read_model(str(path)), logits_layout)
        self.parts = self._compile(split_graph(self.core, self.graph.clone(), self.prefixes),
                                   {**self.fixed_config, **compile_cache_config(cache_dir)})
        self.shapes = FixedShapes(self._compile_at)

    def _compile(self, parts: tuple[Any, Any], config: dict[str, Any]) -> tuple[Any, Any]:
        front, back = (self.core.compile_model(part, "CPU", {**config,
                                                             "INFERENCE_PRECISION_HINT": hint})
                       for part, hint in zip(parts, self.hints, strict=True))
        return front, back

    def _compile_at(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        graph = self.graph.clone()
        graph.reshape(list(shape))
        return self._compile(split_graph(self.core, graph, self.prefixes), self.fixed_config)

    def compiled_for(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        """The (front, back) parts that run an input of ``shape``: the dynamic-shape ones the
        first time a shape comes, then ones compiled for it
        (:class:`~parsenet.engine.openvino_shapes.FixedShapes`)."""
        return self.shapes.get(shape, self.parts)

    def __call__(self, image: Tensor) -> Tensor:
        array = image.detach().to("cpu", torch.float32).contiguous().numpy()
        front, back = self.compiled_for(tuple(array.shape))
        # One request per call and part: serve calls from several threads.
        first = front.create_infer_request().infer({0: array})
        feeds = {0: array, **{k + 1: first[o] for k, o in enumerate(front.outputs)}}
        result = back.create_infer_request().infer(feeds)
        return logits_from(np.array(result[back.output(0)]), self.logits_layout)
