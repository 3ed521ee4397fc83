"""Export to ONNX and TorchScript, and check exports against eager.

ONNX: two exporters, the TorchScript-based one (``dynamo=False`` with ``dynamic_axes``: a
trace whose shape arithmetic is recorded as graph ops) and the dynamo one (``torch.export``
with symbolic height and width). Both give graphs of the same speed and the same outputs
(VGG-16 LargeFOV: max abs diff ~5e-6; the released EfficientNet-Lite models: ~1e-5, the same
labels), but the trace is several times cheaper to make: 3.2 s of CPU time against about 20 s
for the released ``camvid`` model (``benchmarks/notes.md``). ``exporter="auto"`` therefore
traces first and keeps the trace only when it matches the eager model at
:data:`CHECK_SIZES` (a trace can freeze a Python-computed size); otherwise, or where the trace
fails, it uses the dynamo exporter, which stays the way forward once the tracing exporter is
removed from PyTorch. The dynamo exporter writes opset 18 natively and cannot convert this
graph down to 17 (onnx's version converter fails on ReduceMean's axes), hence
:data:`ONNX_OPSET` (18).

TorchScript: ``torch.jit.script`` cannot compile the model (typed ``Sequence`` arguments and
dict outputs of the backbone), so it is traced. Tracing runs without grad, where
:class:`~parsenet.layers.L2Norm` takes its plain formula rather than the custom autograd
Function; the two shape checks the tracer warns about (context replication, output crop
bound) do not depend on the input size for a given model, so the trace holds for any size.

The runtimes that run these files for ``predict``, ``eval`` and ``serve`` are in
:mod:`parsenet.engine.backends`; the export cache in :mod:`parsenet.engine.onnx_cache`.

The exported graph takes normalised images, as the model does. So that a file alone says how
to prepare them, both formats record the model's :class:`~parsenet.preprocessing.Preprocessing`
(ONNX: metadata entry ``parsenet.preprocessing``; TorchScript: extra file of that name), as
JSON; :func:`exported_preprocessing` reads it back and ``exported_preprocessing(path)(image)``
prepares a uint8 RGB image exactly as datasets, evaluate, predict and serve do.

Known limit: a context pyramid (bins > 1) does not export reliably with dynamic sizes (the
dynamo exporter's adaptive pooling is wrong or fails at some sizes, the other one refuses);
``check_export`` catches it and ``predict`` falls back to eager.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from parsenet.errors import ExportError as ExportCheckError  # noqa: F401  (re-exported)
from parsenet.preprocessing import Preprocessing, preprocessing_for

__all__ = ["export_onnx", "export_torchscript", "check_export", "ExportCheckError",
           "OnnxPredictor", "ChannelsLastPredictor", "exported_preprocessing",
           "record_onnx_metadata", "usable_cores", "PREPROCESSING_KEY", "EXPORTERS", "ONNX_OPSET"]

INPUT_NAME, OUTPUT_NAME = "image", "logits"
# Odd sizes other than the export's sample, small and large, wide and tall: a graph with a
# shape baked in fails on at least one.
CHECK_SIZES = ((97, 131), (57, 85), (203, 61))
PREPROCESSING_KEY = "parsenet.preprocessing"  # ONNX metadata key, TorchScript extra file
ONNX_OPSET = 18  # every ONNX file written, benchmarks' included (module docstring)


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warn about deprecations; the caller reports."""
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull, \
            contextlib.redirect_stdout(devnull):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _written_atomically(path: Path, example: str):
    """Yield a temporary name beside ``path``, renamed over it on success and removed on any
    failure: a half-written export never sits at ``path`` nor lingers as ``.tmp``."""
    if path.is_dir():
        raise ExportCheckError(f"{path}: is a directory; name the file to export to, e.g. "
                               f"{path / example}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _preprocessing_json(model: nn.Module, given: Preprocessing | None) -> str | None:
    recorded = preprocessing_for(model, given)
    return None if recorded is None else json.dumps(recorded.to_dict())


def record_onnx_metadata(path: str | os.PathLike, entries: dict[str, str]) -> None:
    """Add ``entries`` to an ONNX file's metadata (replacing those of the same keys)."""
    import onnx

    proto = onnx.load(str(path))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = Path(str(path) + ".meta.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def exported_preprocessing(path: str | os.PathLike) -> Preprocessing | None:
    """The preprocessing an exported file (``.onnx``, else TorchScript) records; None for a
    file exported without one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model")
    if path.suffix == ".onnx":
        import onnx

        try:
            props = onnx.load(str(path), load_external_data=False).metadata_props
        except Exception as e:  # protobuf's DecodeError and kin: a damaged or foreign file
            raise ExportCheckError(f"{path}: not a readable ONNX file ({e})") from None
        text = next((p.value for p in props if p.key == PREPROCESSING_KEY), "")
    else:
        extra = {PREPROCESSING_KEY: ""}
        try:
            _load_torchscript(path, extra)
        except RuntimeError as e:  # torch.jit.load's error for anything it cannot read
            raise ExportCheckError(f"{path}: not a readable TorchScript file ({e})") from None
        text = extra[PREPROCESSING_KEY]
    if not text:
        return None
    try:
        return Preprocessing.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise ExportCheckError(f"{path}: its {PREPROCESSING_KEY} entry is not a "
                               f"preprocessing ({e})") from None


EXPORTERS = ("auto", "torchscript", "dynamo")


def _export_traced(model: nn.Module, sample: Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        model, (sample,), str(path), dynamo=False, opset_version=opset,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {2: "height", 3: "width"},
                      OUTPUT_NAME: {2: "height", 3: "width"}},
    )


def _export_dynamo(model: nn.Module, sample: Tensor, path: Path, opset: int) -> None:
    height = torch.export.Dim("height", min=32, max=8192)
    width = torch.export.Dim("width", min=32, max=8192)
    torch.onnx.export(
        model, (sample,), str(path), dynamo=True, opset_version=opset,
        dynamic_shapes=({2: height, 3: width},), input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME], external_data=False, verbose=False,
    )


def _trace_holds(model: nn.Module, path: Path) -> bool:
    """Whether a traced export gives the eager model's outputs at other sizes."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False  # cannot be checked here: the dynamo export needs no check
    try:
        check_export(path, model, sizes=CHECK_SIZES, onnx=True)
    except ExportCheckError:
        return False
    return True


def export_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int = ONNX_OPSET,
                sample_size: tuple[int, int] = (321, 321),
                preprocessing: Preprocessing | None = None, exporter: str = "auto") -> str:
    """Write ``model`` as ONNX with dynamic batch-1 height and width (input ``image``
    1 x 3 x H x W, output ``logits`` 1 x K x H x W) and the preprocessing its input needs
    (default ``model.preprocessing``; module docstring). ``exporter``: one of
    :data:`EXPORTERS` (module docstring). Returns the exporter used: ``"torchscript"`` or
    ``"dynamo"``."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    recorded = _preprocessing_json(model, preprocessing)
    sample = torch.randn(1, 3, *sample_size)
    with _written_atomically(path, "model.onnx") as tmp, _eval_no_grad(model), _quiet():
        used = "dynamo"
        if exporter != "dynamo":
            try:
                _export_traced(model, sample, tmp, opset)
                if exporter == "torchscript" or _trace_holds(model, tmp):
                    used = "torchscript"
            except Exception:  # e.g. a context pyramid, which the tracer refuses
                if exporter == "torchscript":
                    raise
        if used == "dynamo":
            _export_dynamo(model, sample, tmp, opset)
        if recorded is not None:
            record_onnx_metadata(tmp, {PREPROCESSING_KEY: recorded})
    return used


def export_torchscript(model: nn.Module, path: str | os.PathLike,
                       sample_size: tuple[int, int] = (321, 321),
                       preprocessing: Preprocessing | None = None) -> None:
    """Write a traced TorchScript module (input 1 x 3 x H x W, any H, W >= 32) and the
    preprocessing its input needs (default ``model.preprocessing``; module docstring)."""
    path = Path(path)
    recorded = _preprocessing_json(model, preprocessing)
    extra = {} if recorded is None else {PREPROCESSING_KEY: recorded}
    with _written_atomically(path, "model.pt") as tmp, _eval_no_grad(model), _quiet():
        # check_trace off: check_export compares with eager at other sizes, a stronger check.
        traced = torch.jit.trace(model, torch.randn(1, 3, *sample_size), check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files=extra)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class OnnxPredictor:
    """An ONNX Runtime session called like a model: 1 x 3 x H x W tensor -> logits tensor.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: the CPU cores this process may use).
        allow_spinning: let idle worker threads spin (ONNX Runtime's default: lowest
            latency on an idle machine; turning it off helped when the cores were shared).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 allow_spinning: bool = True) -> None:
        import onnxruntime as ort

        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or usable_cores()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not allow_spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def metadata(self) -> dict[str, str]:
        """The file's metadata entries (e.g. :data:`PREPROCESSING_KEY`), read by ONNX Runtime
        with the graph: no need to import onnx, or parse the file again, for them."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, image: Tensor) -> Tensor:
        array = image.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


class ChannelsLastPredictor:
    """Eager model in channels_last memory format (faster convolutions on CPU)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)

    def __call__(self, image: Tensor) -> Tensor:
        with torch.inference_mode():
            out = self.model(image.contiguous(memory_format=torch.channels_last))
        return out.contiguous()


def _load_torchscript(path: Path, extra_files: dict[str, str] | None = None
                      ) -> Callable[[Tensor], Tensor]:
    with warnings.catch_warnings():  # TorchScript is deprecated; tracing is still our path
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
    module.eval()
    return module


def check_export(path: str | os.PathLike, model: nn.Module,
                 sizes: Sequence[tuple[int, int]] = ((321, 321), (257, 385)),
                 atol: float = 1e-4, onnx: bool | None = None, *,
                 predictor: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
    """Compare an exported file with ``model`` on random images of each size; ``onnx``:
    whether the file is ONNX (default: whether it is named ``.onnx``; else TorchScript);
    ``predictor``: the file already loaded (e.g. an :class:`OnnxPredictor` of it), else it
    is loaded here.
    Returns ``{"HxW": max abs diff}``; raises ExportCheckError when a difference exceeds
    ``atol`` or a shape differs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model")
    onnx = path.suffix == ".onnx" if onnx is None else onnx
    run = predictor or (OnnxPredictor(path) if onnx else _load_torchscript(path))
    diffs: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)
    with _eval_no_grad(model):
        for h, w in sizes:
            x = torch.randn(1, 3, h, w, generator=generator)
            expected = model(x)
            try:
                got = run(x)
            except Exception as e:  # e.g. onnxruntime rejecting a shape the graph baked in
                raise ExportCheckError(f"{path}: fails at input {h}x{w}: {e}") from e
            if tuple(got.shape) != tuple(expected.shape):
                raise ExportCheckError(f"{path}: output shape {tuple(got.shape)} at input {h}x{w}"
                                       f", eager gives {tuple(expected.shape)}")
            diff = float((got - expected).abs().max())
            diffs[f"{h}x{w}"] = diff
            if not diff <= atol:
                raise ExportCheckError(f"{path}: max abs difference {diff:.3g} > {atol} from "
                                       f"the eager model at input {h}x{w}")
    return diffs
