"""``auto``'s table (CPU kind x trunk -> runtime), one test per row, through make_predictor as
predict, eval and serve call it. The CPU kind is faked by its two checks, the runtimes by
recording stand-ins: nothing is exported or compiled."""

from pathlib import Path

import pytest
import torch

import parsenet.engine.backends as backends
import parsenet.engine.export as export
from parsenet.engine import precision
from parsenet.models import (
    parsenet_efficientnet_lite0,
    parsenet_efficientnet_lite1,
    parsenet_efficientnet_lite2,
    parsenet_vgg16,
)

BUILDERS = {"lite0": parsenet_efficientnet_lite0, "lite1": parsenet_efficientnet_lite1,
            "lite2": parsenet_efficientnet_lite2,
            "vgg": lambda num_classes: parsenet_vgg16(num_classes=num_classes, width=0.0625)}
CPUS = {"amx": (True, True), "avx512-bf16": (True, False), "no-bf16": (False, False)}


class _Runtime:
    """Stands in for a compiled runtime; ``precision`` as OpenVinoPredictor names it."""

    def __init__(self, path, *args, **kwargs):
        self.precision = args[0] if args and args[0] in ("f32", "bf16") else "f32>bf16"


class _Split(_Runtime):
    pass


def _auto(monkeypatch, cpu: str, trunk: str, *, openvino: bool = True,
          onnxruntime: bool = True) -> str:
    """The runtime ``make_predictor(backend="auto")`` picks for ``trunk`` on ``cpu``."""
    native, amx = CPUS[cpu]
    monkeypatch.delenv("PARSENET_BACKEND", raising=False)
    monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(backends, "cpu_has_amx", lambda: amx, raising=False)
    monkeypatch.setattr(backends, "openvino_available", lambda: openvino)
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: onnxruntime)
    monkeypatch.setattr(backends, "OpenVinoPredictor", _Runtime)
    monkeypatch.setattr(backends, "SplitOpenVinoPredictor", _Split)
    monkeypatch.setattr(export, "OnnxPredictor", _Runtime)
    monkeypatch.setattr(backends.onnx_cache, "with_verified_export",
                        lambda model, checkpoint, cache_dir, build: build(Path("m.onnx")))
    torch.manual_seed(0)
    model = BUILDERS[trunk](num_classes=3).eval()
    return backends.make_predictor(model, backend="auto")[1]


# Measured rows (docs/benchmarks/2026-12-07-epyc-released*.json)
def test_lite2_runs_the_split_on_avx512_bf16_without_amx(monkeypatch):
    # siftflow, three runs: the split 0.98x / 1.69x / 1.62x eager fp32, ONNX Runtime
    # 1.17x / 1.17x / 1.52x
    assert _auto(monkeypatch, "avx512-bf16", "lite2") == "openvino-bf16-split"


def test_lite0_runs_the_split_on_avx512_bf16_without_amx(monkeypatch):
    assert _auto(monkeypatch, "avx512-bf16", "lite0") == "openvino-bf16-split"


def test_lite0_runs_openvino_bf16_on_amx(monkeypatch):
    # camvid on an AMX Xeon: the whole graph in bf16 5.23x eager fp32, the split 3.97x; it
    # labels 99.55% of the whole val split's pixels as eager fp32 does
    assert _auto(monkeypatch, "amx", "lite0") == "openvino-bf16"


def test_lite2_runs_the_split_on_amx(monkeypatch):
    # siftflow on an AMX Xeon, two runs: the split 1.35x / 1.38x, ONNX Runtime 1.23x / 1.23x;
    # whole-graph bf16 is faster but labels 97.42% of pixels as eager fp32
    assert _auto(monkeypatch, "amx", "lite2") == "openvino-bf16-split"


# Unmeasured rows: the rule from before the measurements


@pytest.mark.parametrize("cpu", ["amx", "avx512-bf16"])
def test_native_bf16_trunks_without_a_split_point_run_openvino_float32(monkeypatch, cpu):
    assert _auto(monkeypatch, cpu, "vgg") == "openvino-f32"
    assert _auto(monkeypatch, cpu, "lite1") == "openvino-f32"


@pytest.mark.parametrize("trunk", ["lite0", "lite2", "vgg"])
def test_without_native_bf16_every_trunk_runs_openvino_float32(monkeypatch, trunk):
    assert _auto(monkeypatch, "no-bf16", trunk) == "openvino-f32"


# What is not installed
@pytest.mark.parametrize("cpu", ["amx", "avx512-bf16", "no-bf16"])
def test_without_openvino_every_row_runs_onnx_runtime(monkeypatch, cpu):
    for trunk in ("lite0", "lite2"):
        assert _auto(monkeypatch, cpu, trunk, openvino=False) == "onnx"


def test_lite2_without_onnxruntime_falls_back_to_eager(monkeypatch):
    # OpenVINO needs ONNX Runtime too (openvino_available), so eager is what is left
    assert _auto(monkeypatch, "avx512-bf16", "lite2", openvino=False,
                 onnxruntime=False) == "eager"


def test_the_cpu_kind_is_read_from_torchs_checks(monkeypatch):
    monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)
    for name, (native, amx) in CPUS.items():
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n,
                            raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda a=amx: a,
                            raising=False)
        assert precision.cpu_has_amx() is amx
        assert backends.cpu_bf16_kind() == name
    monkeypatch.setenv(precision.CPU_BF16_ENV, "0")  # the override wins over AMX
    assert backends.cpu_bf16_kind() == "no-bf16"

