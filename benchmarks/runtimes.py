"""The CPU runtimes the ``released`` section times: one callable image -> logits each.

eager fp32 (NCHW), eager bf16 (autocast, channels_last), channels_last, torch.compile, ONNX
Runtime, and OpenVINO fp32 / bf16 / bf16 split (the input end in float32: the
``openvino-bf16-split`` backend) / INT8 (NNCF post-training quantisation). Each builder
returns a callable, or raises :class:`Unavailable` with the reason it cannot run here.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from parsenet.engine.export import ONNX_OPSET

__all__ = ["Unavailable", "eager_runtimes", "exported_runtimes", "conv_stack", "static_onnx",
           "int8_ir", "RUNTIMES"]

Run = Callable[[Tensor], Tensor]
RUNTIMES = ("eager fp32", "eager bf16", "channels_last", "torch.compile", "ONNX Runtime",
            "OpenVINO fp32", "OpenVINO bf16", "OpenVINO bf16 split", "OpenVINO INT8")


class Unavailable(Exception):
    """This runtime cannot run here; the message says why."""


def _logits(out: object) -> Tensor:
    return out["out"] if isinstance(out, dict) else out  # torchvision's segmentation models


def eager_runtimes(model: nn.Module, *, compile_model: bool, sample: Tensor
                   ) -> tuple[dict[str, Run], dict[str, str], dict[str, float]]:
    """(runtimes, skipped with reasons, setup seconds) of the PyTorch runtimes."""
    model = model.eval()
    last = _ChannelsLast(model)

    def fp32(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return _logits(model(x))

    def bf16(x: Tensor) -> Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
            return last(x).float()

    runs: dict[str, Run] = {"eager fp32": fp32, "eager bf16": bf16, "channels_last": last}
    skipped: dict[str, str] = {}
    setup: dict[str, float] = {}
    if compile_model:
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(sample)  # compiling happens on the first call
        setup["torch.compile"] = time.perf_counter() - start

        def run_compiled(x: Tensor) -> Tensor:
            with torch.inference_mode():
                return _logits(compiled(x))

        runs["torch.compile"] = run_compiled
    else:
        skipped["torch.compile"] = "--quick (compiling takes minutes on a shared 2-core CPU)"
    return runs, skipped, setup


class _ChannelsLast:
    def __init__(self, model: nn.Module) -> None:
        self.model = model.to(memory_format=torch.channels_last)

    def __call__(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            out = _logits(self.model(x.contiguous(memory_format=torch.channels_last)))
        return out.contiguous()


def static_onnx(model: nn.Module, size: tuple[int, int], path: Path) -> Path:
    """A fixed-size ONNX export (TorchScript-based exporter: seconds, where the dynamo one
    takes minutes on a shared CPU); for models timed at one size only."""
    import warnings

    class Logits(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Tensor) -> Tensor:
            return _logits(self.inner(x))

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model).eval(), (torch.randn(1, 3, *size),), str(path),
                          dynamo=False, opset_version=ONNX_OPSET, input_names=["image"],
                          output_names=["logits"])
    return path


def int8_ir(onnx_path: Path, calibration: Sequence[np.ndarray], out_dir: Path) -> Path:
    """NNCF's post-training INT8 quantisation of ``onnx_path``, as an OpenVINO IR: for the
    conv stack of the roofline; a released model's INT8 row is the library's export
    (``benchmarks.released``), as NNCF quantises ParseNet's traced export badly."""
    import nncf
    import openvino as ov

    quantized = nncf.quantize(ov.Core().read_model(str(onnx_path)),
                              nncf.Dataset(list(calibration)), subset_size=len(calibration))
    path = out_dir / "int8.xml"
    with torch.inference_mode(False):
        ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


def int8_unavailable(calibration: Sequence[object]) -> str:
    """Why an OpenVINO INT8 row cannot be built here ("" when it can): OpenVINO, NNCF and
    calibration images are all needed."""
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'parsenet[openvino]')"
    if importlib.util.find_spec("nncf") is None:
        return "nncf is not installed"
    return "" if calibration else "no calibration images"


def exported_runtimes(onnx_path: Path | None, calibration: Sequence[np.ndarray], *,
                      int8: bool = True, split_at: str | None = None
                      ) -> tuple[dict[str, Run], dict[str, str], dict[str, float]]:
    """(runtimes, skipped with reasons, setup seconds) of ONNX Runtime and OpenVINO on an
    ONNX file (None: no export, all skipped); ``split_at``: the op-name prefix where the
    split runtime turns bf16 (None: it is skipped); ``int8`` False: no INT8 row and no entry
    for it in either dict (a caller that builds its own INT8 row says why it is missing)."""
    runs: dict[str, Run] = {}
    skipped: dict[str, str] = {}
    setup: dict[str, float] = {}
    asked = [n for n in RUNTIMES[4:] if int8 or n != "OpenVINO INT8"]
    if onnx_path is None:
        return runs, {n: "no ONNX export" for n in asked}, setup
    from parsenet.engine.export import OnnxPredictor

    runs["ONNX Runtime"] = OnnxPredictor(onnx_path)
    if importlib.util.find_spec("openvino") is None:
        reason = "openvino is not installed (pip install 'parsenet[openvino]')"
        return runs, {n: reason for n in asked[1:]}, setup
    from parsenet.engine.backends import OpenVinoPredictor
    from parsenet.engine.openvino_split import SplitOpenVinoPredictor

    builders = {"OpenVINO fp32": lambda: OpenVinoPredictor(onnx_path, "f32"),
                "OpenVINO bf16": lambda: OpenVinoPredictor(onnx_path, "bf16"),
                "OpenVINO bf16 split": lambda: SplitOpenVinoPredictor(onnx_path, split_at)}
    for name, build in builders.items():
        if name == "OpenVINO bf16 split" and split_at is None:
            skipped[name] = "no split point measured for this architecture"
            continue
        try:
            runs[name] = build()
        except RuntimeError as e:  # e.g. bf16 with ONEDNN_MAX_CPU_ISA=AVX2: OpenVINO honours it
            skipped[name] = "OpenVINO cannot compile it here: " + " ".join(str(e).split())[-160:]
    if not int8:
        return runs, skipped, setup
    why_not = int8_unavailable(calibration)
    if why_not:
        return runs, {**skipped, "OpenVINO INT8": why_not}, setup
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="parsenet-int8-"))
    runs["OpenVINO INT8"] = OpenVinoPredictor(int8_ir(onnx_path, calibration, folder), "f32")
    setup["OpenVINO INT8 quantisation"] = time.perf_counter() - start
    return runs, skipped, setup


def conv_stack(channels: int, layers: int = 4) -> nn.Module:
    """3x3 convolutions only: what the machine's conv peak is measured on."""
    return nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(layers)]
                         ).eval()
