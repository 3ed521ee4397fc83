"""The backend ``predict`` runs a model with: eager (channels_last on CPU) or ONNX Runtime,
its export cached where the caller says (:mod:`parsenet.engine.onnx_cache`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from parsenet.engine import onnx_cache
from parsenet.engine.export import (
    BACKENDS,
    ChannelsLastPredictor,
    ExportCheckError,
    onnx_cache_path,
)
from parsenet.errors import UsageError

__all__ = ["make_predictor"]


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_predictor(model: nn.Module, *, backend: str = "auto",
                   checkpoint: str | os.PathLike | None = None, device: str = "cpu",
                   cache_dir: str | os.PathLike | None = None
                   ) -> tuple[Callable[[Tensor], Tensor], str]:
    """A callable image -> logits for ``predict``, and the backend it uses.

    ``"onnx"`` runs ``model`` with ONNX Runtime. Given ``checkpoint``, the export is cached
    at :func:`onnx_cache_path` (in ``cache_dir``, default the checkpoint's folder), checked
    against eager when written and verified by hash when reused (see
    :mod:`parsenet.engine.onnx_cache`); without it the export is temporary. ``"eager"`` runs
    the model in channels_last on CPU (as is on other devices). ``"auto"`` is onnx on CPU
    when onnxruntime is importable and a ``checkpoint`` names the cache, else eager.
    """
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cpu = torch.device(device).type == "cpu"
    automatic = backend == "auto"
    if automatic:
        backend = ("onnx" if on_cpu and checkpoint is not None and _onnxruntime_available()
                   else "eager")
    if backend == "eager":
        model = model.to(device).eval()
        if on_cpu:
            return ChannelsLastPredictor(model), "eager"

        def run(image: Tensor) -> Tensor:
            with torch.inference_mode():
                return model(image.to(device))
        return run, "eager"
    if not _onnxruntime_available():
        raise UsageError("backend 'onnx' needs onnxruntime (pip install 'parsenet[export]')")
    try:
        if checkpoint is None:
            return onnx_cache.temporary_onnx_predictor(model), "onnx"
        cache = onnx_cache_path(checkpoint, cache_dir)
        return onnx_cache.cached_onnx_predictor(model, cache), "onnx"
    except ExportCheckError as e:
        if not automatic:
            raise
        warnings.warn(f"ONNX export unusable, running eager instead: {e}", stacklevel=2)
        return ChannelsLastPredictor(model), "eager"
