"""The runtimes an :class:`~parsenet.engine.inferencer.Inferencer` runs a model with.

    eager     PyTorch; channels_last on the CPU
    onnx      ONNX Runtime, on the model's ONNX export
    openvino  OpenVINO in float32 on the same ONNX export
    openvino-bf16
              OpenVINO in bf16: only on CPUs that compute bf16 natively (AVX512-BF16 or
              AMX; :func:`parsenet.engine.precision.cpu_has_native_bf16`), where it is about
              twice as fast as float32; on AVX2-only CPUs bf16 would be emulated (slower, and
              OpenVINO refuses some layers), so it is refused there
    openvino-bf16-split
              OpenVINO with the input end (stem and first two stages) in float32 and the
              rest in bf16 (:mod:`parsenet.engine.openvino_split`): on native-bf16 CPUs
              only, and for architectures whose split point was measured only (the
              released EfficientNet-Lite0 and -Lite2 models)
    auto      the fastest installed runtime that holds accuracy (val mean IU within 0.3 of
              eager fp32, >= 99% of pixels labelled alike), looked up by CPU kind (AMX;
              AVX512-BF16 without AMX; no native bf16) and trunk in :data:`AUTO_MEASURED`.
              Measured, on an AMD EPYC with AVX512-BF16 and no AMX: openvino-bf16-split for
              EfficientNet-Lite0 (camvid) and Lite2 (siftflow; ONNX Runtime was faster in one
              of three runs there); on an Intel Xeon with AMX: openvino-bf16 for Lite0 (it
              holds accuracy on camvid's whole val split) and the split for Lite2 (bf16 on
              the whole graph labels 2.6% of siftflow's pixels otherwise). Every other
              combination is a guess, the rule from before those measurements
              (:data:`AUTO_DEFAULT`): openvino-bf16-split with native bf16 (openvino for a
              model without a measured split point), openvino without. What is not
              installed falls back: openvino to onnx to eager; eager off the CPU. INT8 is
              not faster than bf16 on AMX and missed the accuracy bar on the released
              models (docs/PERFORMANCE.md), so auto does not pick it

ONNX exports are cached (:mod:`parsenet.engine.onnx_cache`), keyed on the checkpoint's
content and verified against the eager model before they are used. OpenVINO is the optional
extra ``parsenet[openvino]``; without it ``auto`` falls back and ``openvino`` says what to
install.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from parsenet.choices import BACKENDS
from parsenet.engine import onnx_cache
from parsenet.engine.export import ChannelsLastPredictor, ExportCheckError, usable_cores
from parsenet.engine.memory import ONNX_OVERHEAD
from parsenet.engine.openvino_layout import logits_from, with_logits_layout
from parsenet.engine.openvino_shapes import STATIC_SHAPES, FixedShapes
from parsenet.engine.openvino_split import (
    SPLIT_BACKEND,
    SplitOpenVinoPredictor,
    SplitPointError,
    compile_cache_config,
    split_point,
)
from parsenet.engine.precision import cpu_has_amx, cpu_has_native_bf16
from parsenet.errors import UsageError

BACKEND_ENV = "PARSENET_BACKEND"

__all__ = ["BACKENDS", "BACKEND_ENV", "make_predictor", "OpenVinoPredictor",
           "SplitOpenVinoPredictor", "openvino_available", "onnxruntime_available",
           "default_backend", "memory_overhead", "AUTO_MEASURED", "AUTO_DEFAULT",
           "cpu_bf16_kind", "trunk_name", "STATIC_SHAPES"]

# The CPU kinds ``auto`` tells apart: how fast bf16 is, and so which runtime wins.
AMX, AVX512_BF16, NO_BF16 = "amx", "avx512-bf16", "no-bf16"

# (CPU kind, trunk) -> what ``auto`` runs, measured by the ``released`` benchmark (times in the
# JSON's released_<model> section; each pick labels >= 99% of val pixels as eager fp32 does).
# A trunk's entry was measured at its release's input size and is assumed to carry to others.
AUTO_MEASURED: dict[tuple[str, str], str] = {
    # docs/benchmarks/2026-12-07-epyc-released.json (AMD EPYC, idle), camvid 360 x 480:
    # split 2.51x eager fp32 (2.49x as the default row), ONNX Runtime 1.51x, OpenVINO fp32 1.42x
    (AVX512_BF16, "efficientnet_lite0"): SPLIT_BACKEND,
    # siftflow 512 x 512, three runs on that CPU (speed-up over eager fp32, split / ONNX Runtime):
    # 2026-12-07-epyc-released.json 0.98 / 1.17, ...-released-auto.json 1.69 / 1.17,
    # ...-released-siftflow-timing.json 1.62 / 1.52: the split is faster in two of three
    # (medians 1.62 / 1.17) and labels 99.14% of val pixels as eager fp32
    (AVX512_BF16, "efficientnet_lite2"): SPLIT_BACKEND,
    # docs/benchmarks/2026-12-07-xeon-amx-released.json (Intel Xeon with AMX, idle), camvid
    # 360 x 480: OpenVINO bf16 on the whole graph 5.23x eager fp32, the split 3.97x, INT8
    # 5.05x (98.37% of pixels alike: fails the bar); on the whole val split (101 images, the
    # release's eval) bf16 labels 99.55% of pixels as eager fp32, mean IU +0.01
    # (...-xeon-amx-accuracy-camvid.json).
    (AMX, "efficientnet_lite0"): "openvino-bf16",
    # siftflow 512 x 512 on that Xeon, two runs (-released.json, -released-auto.json): the
    # split 1.35x / 1.38x eager fp32, ONNX Runtime 1.23x / 1.23x; whole-graph bf16 1.47x /
    # 1.52x and INT8 1.53x / 1.43x label 97.42% and 92.58% of val pixels as eager fp32; a
    # third run (-released-siftflow-static.json, a slower machine) with fixed-shape split
    # parts: the split 1.88x, ONNX Runtime 2.00x (faster in two of three runs: not told apart)
    (AMX, "efficientnet_lite2"): SPLIT_BACKEND,
}
# Everything unmeasured: the rule from before the measurements above;
# without native bf16, docs/benchmarks/2026-12-06-epyc-released-camvid-avx2-emulated.json
# timed OpenVINO fp32 at 2.46x, but ONNX Runtime ignores the emulation, so they are not ranked.
AUTO_DEFAULT: dict[str, str] = {AMX: SPLIT_BACKEND, AVX512_BF16: SPLIT_BACKEND,
                                NO_BF16: "openvino"}



def _importable(name: str) -> bool:
    # Found, not imported: loading OpenVINO starts its thread pool in this process.
    return importlib.util.find_spec(name) is not None


def onnxruntime_available() -> bool:
    return _importable("onnxruntime")


def openvino_available() -> bool:
    # OpenVINO reads the ONNX export, which the exporter writes with onnx and checks with
    # ONNX Runtime; all three must be there.
    return _importable("openvino") and _importable("onnx") and onnxruntime_available()


def _openvino_precision(backend: str) -> str:
    if backend == "openvino":
        return "f32"
    if not cpu_has_native_bf16():
        raise UsageError(f"--backend {backend} needs a CPU with native bf16 (AVX512-BF16 "
                         f"or AMX); on this one bf16 is emulated and slower than float32: use "
                         f"--backend openvino")
    return "bf16"


def cpu_bf16_kind() -> str:
    """The CPU kind :data:`AUTO_MEASURED` is keyed on: ``amx``, ``avx512-bf16`` (without AMX) or
    ``no-bf16`` (``PARSENET_CPU_BF16=0`` included). Tests monkeypatch it, or the two checks."""
    if not cpu_has_native_bf16():
        return NO_BF16
    return AMX if cpu_has_amx() else AVX512_BF16


def trunk_name(model: nn.Module | None) -> str:
    """The architecture :data:`AUTO_MEASURED` is keyed on: ``efficientnet_lite0`` .. ``lite2``
    (the builders' names), else the backbone's class name; ``""`` for no model."""
    from parsenet.backbones.efficientnet_lite import EfficientNetLite

    if model is None:
        return ""
    backbone = getattr(model, "backbone", model)
    if isinstance(backbone, EfficientNetLite):
        return f"efficientnet_{backbone.variant}"
    return type(backbone).__name__


def default_backend(device: str = "cpu", model: nn.Module | None = None) -> str:
    """What ``auto`` runs for ``model`` on ``device``: :data:`AUTO_MEASURED`'s entry for this
    CPU kind and the model's trunk, else :data:`AUTO_DEFAULT`'s for the kind, then the first
    of it, onnx, eager that is installed. ``$PARSENET_BACKEND`` names another (e.g. eager,
    to keep exports out of a test run)."""
    forced = os.environ.get(BACKEND_ENV, "").strip()
    if forced:
        if forced not in BACKENDS[1:]:
            raise UsageError(f"{BACKEND_ENV}={forced!r}: expected one of {BACKENDS[1:]}")
        return forced
    if torch.device(device).type != "cpu":
        return "eager"
    kind = cpu_bf16_kind()
    backend = AUTO_MEASURED.get((kind, trunk_name(model)), AUTO_DEFAULT[kind])
    if backend.startswith("openvino") and not openvino_available():
        backend = "onnx"
    if backend == "onnx" and not onnxruntime_available():
        backend = "eager"
    return backend


def memory_overhead(backend: str) -> float:
    """Peak memory of ``backend`` relative to eager (runtimes plan their own buffers)."""
    return 1.0 if backend == "eager" else ONNX_OVERHEAD


class OpenVinoPredictor:
    """An OpenVINO compiled model called like a model: 1 x 3 x H x W tensor -> logits.

    Args:
        path: an ``.onnx`` file or an OpenVINO IR ``.xml`` (e.g. an INT8 one).
        precision: ``f32`` or ``bf16`` (OpenVINO's ``INFERENCE_PRECISION_HINT``; its CPU
            default is bf16 wherever the CPU has it, so float32 must be asked for).
        threads: inference threads (default: the CPU cores this process may use).
        cache_dir: a folder for OpenVINO's compiled-model cache (``CACHE_DIR``): a later
            predictor of the same graph and options imports the compiled model from there
            instead of compiling it again; None: nothing is written.
        logits_layout: how OpenVINO hands over the logits: ``NHWC`` (no reorder at the end
            of the graph; returned as a channels-last view,
            :mod:`~parsenet.engine.openvino_layout`) or ``NCHW``.
    """

    def __init__(self, path: str | os.PathLike, precision: str = "f32",
                 threads: int | None = None, *,
                 cache_dir: str | os.PathLike | None = None,
                 logits_layout: str = "NHWC") -> None:
        import openvino as ov

        if precision not in ("f32", "bf16"):
            raise UsageError(f"OpenVINO precision must be f32 or bf16, got {precision!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        self.path, self.precision = Path(path), precision
        self.core = ov.Core()  # kept: the compiled model is released before its core
        # Fixed-shape models are compiled without CACHE_DIR: a blob per image size would
        # pile up there, run after run.
        self.fixed_config = {"INFERENCE_PRECISION_HINT": precision,
                             "PERFORMANCE_HINT": "LATENCY",
                             "INFERENCE_NUM_THREADS": threads or usable_cores()}
        self.logits_layout = logits_layout
        self.graph = with_logits_layout(self.core.read_model(str(path)), logits_layout)
        self.compiled = self.core.compile_model(
            self.graph, "CPU", {**self.fixed_config, **compile_cache_config(cache_dir)})
        self.shapes = FixedShapes(self._compile_at)

    def compiled_for(self, shape: tuple[int, ...]) -> Any:
        """The model that runs an input of ``shape``: the dynamic-shape one the first time a
        shape comes, then one compiled for that fixed shape
        (:class:`~parsenet.engine.openvino_shapes.FixedShapes`)."""
        return self.shapes.get(shape, self.compiled)

    @property
    def static(self) -> dict[tuple[int, ...], Any]:
        """Input shape -> its fixed-shape compiled model."""
        return self.shapes.static

    def _compile_at(self, shape: tuple[int, ...]) -> Any:
        graph = self.graph.clone()
        graph.reshape(list(shape))
        return self.core.compile_model(graph, "CPU", self.fixed_config)

    def __call__(self, image: Tensor) -> Tensor:
        array = image.detach().to("cpu", torch.float32).contiguous().numpy()
        compiled = self.compiled_for(tuple(array.shape))
        # One request per call: a request serves one call at a time, and serve calls from
        # several threads.
        result = compiled.create_infer_request().infer({0: array})
        return logits_from(np.array(result[compiled.output(0)]), self.logits_layout)


def _eager(model: nn.Module, device: str) -> Callable[[Tensor], Tensor]:
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        return ChannelsLastPredictor(model)
    return model


def make_predictor(model: nn.Module, *, backend: str = "auto",
                   checkpoint: str | os.PathLike | None = None, device: str = "cpu",
                   cache_dir: str | os.PathLike | None = None
                   ) -> tuple[Callable[[Tensor], Tensor], str]:
    """A callable image batch -> logits, and the name of the runtime it uses.

    ``checkpoint``: the file whose content keys the export cache (a training checkpoint,
    or a released model's weights file); ``cache_dir``: where the cache lives (default
    :func:`parsenet.engine.onnx_cache.default_cache_dir`). Without ``checkpoint`` an export
    lives in a temporary folder for this run only. ``auto`` falls back to eager, with a
    warning, when the export fails its check against the eager model.
    """
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {BACKENDS}, got {backend!r}")
    automatic = backend == "auto"
    if automatic:
        backend = default_backend(device, model)
    if backend == "eager":
        return _eager(model, device), "eager"
    if torch.device(device).type != "cpu":
        raise UsageError(f"backend {backend!r} runs on the CPU; use --backend eager with "
                         f"--device {device}")
    if backend == "onnx" and not onnxruntime_available():
        raise UsageError("backend 'onnx' needs onnxruntime (pip install 'parsenet[export]')")
    precision = _openvino_precision(backend) if backend.startswith("openvino") else ""
    if precision and not openvino_available():
        raise UsageError(f"backend {backend!r} needs OpenVINO (pip install 'parsenet[openvino]')")
    split_at = _split_at(model, backend, automatic)
    if backend == SPLIT_BACKEND and split_at is None:
        backend, precision = "openvino", "f32"

    # Compiled models are cached beside the exports they come from; a temporary export
    # (no checkpoint to key it) leaves nothing behind, its compiled model neither.
    compiled = None if checkpoint is None else onnx_cache.compiled_cache_dir(cache_dir)

    def build(onnx_path: Path) -> Callable[[Tensor], Tensor]:
        if backend == "onnx":
            from parsenet.engine.export import OnnxPredictor

            return OnnxPredictor(onnx_path)
        if split_at is not None:
            return _split_or_float32(onnx_path, split_at, automatic, compiled)
        return OpenVinoPredictor(onnx_path, precision, cache_dir=compiled)

    try:
        run = onnx_cache.with_verified_export(model, checkpoint, cache_dir, build)
    except ExportCheckError as e:
        if not automatic:
            raise
        warnings.warn(f"the ONNX export is unusable, running eager instead: {e}",
                      stacklevel=2)
        return _eager(model, device), "eager"
    if backend == "onnx" or isinstance(run, SplitOpenVinoPredictor):
        return run, backend
    return run, f"openvino-{run.precision}"


def _split_or_float32(onnx_path: Path, split_at: str, automatic: bool,
                      cache_dir: Path | None) -> SplitOpenVinoPredictor | OpenVinoPredictor:
    try:
        return SplitOpenVinoPredictor(onnx_path, split_at, cache_dir=cache_dir)
    except SplitPointError as e:  # the graph's op names do not follow the module tree
        if not automatic:
            raise
        warnings.warn(f"{e}; running OpenVINO in float32 instead", stacklevel=4)
        return OpenVinoPredictor(onnx_path, "f32", cache_dir=cache_dir)


def _split_at(model: nn.Module, backend: str, automatic: bool) -> str | None:
    """Where the split backend turns bf16 for ``model``; None for another backend, or for an
    architecture with no measured split point under ``auto`` (it then runs float32)."""
    if backend != SPLIT_BACKEND:
        return None
    split_at = split_point(model)
    if split_at is None and not automatic:
        trunk = type(getattr(model, "backbone", model)).__name__
        raise UsageError(f"--backend {SPLIT_BACKEND}: no split point was measured for "
                         f"{type(model).__name__} on {trunk} (only for the released "
                         f"EfficientNet-Lite0/Lite2 models); use --backend openvino or "
                         f"openvino-bf16")
    return split_at
