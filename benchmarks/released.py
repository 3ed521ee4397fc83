"""Section ``released``: the released models on every CPU runtime, against peers and the
roofline.

Per released architecture (EfficientNet-Lite0: ``camvid`` at 360 x 480; Lite2:
``siftflow``, whose eval runs at scale 2, at 512 x 512), interleaved in one run: eager fp32,
eager bf16, channels_last, torch.compile, ONNX Runtime, OpenVINO fp32 / bf16 / bf16 split
(stem and first two stages in float32: ``--backend openvino-bf16-split``) / INT8 (the IR
``parsenet export --format openvino --int8`` writes: NNCF on the dynamo export, calibrated on
training images; the other exported rows run ``export_onnx``'s ``auto`` export, a trace for
the released models), and what ``predict``'s default backend (``auto``) picks, built as
``predict`` builds it. For each, the val mean IU on the first ``val_images`` val
images (the config's eval mode) and the share of pixels labelled as eager fp32 labels them.
The peers, torchvision's LR-ASPP and DeepLabV3 MobileNetV3-Large (random weights), are timed
at the same input on the same runtimes, with their GFLOPs. The roofline: achieved GFLOP/s
against the machine's conv peak (the best runtime on a stack of 3x3 convolutions), per
precision.

``--quick`` runs every code path on a toy ParseNet-VGG at 64 x 96 with two val images (its
split runtime is cut at :data:`QUICK_SPLIT_AT`, a code-path check with no accuracy claim).
``PARSENET_BENCH_RELEASES=camvid`` (comma-separated) limits the models;
``PARSENET_BENCH_TIMING_ONLY=1`` times only (no accuracy, no torch.compile): for the second
run under ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 PARSENET_CPU_BF16=0``, which
emulates an AVX2-only CPU where a runtime honours those variables.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import Section, Settings, interleave, median
from benchmarks.runtimes import (
    RUNTIMES,
    conv_stack,
    eager_runtimes,
    exported_runtimes,
    int8_unavailable,
)
from benchmarks.runtimes import static_onnx as _static_onnx
from parsenet.engine.export import ONNX_OPSET

__all__ = ["run", "RELEASES", "GOAL_NATIVE_BF16", "GOAL_AVX2"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# release -> (dataset folder in shared/data, input H x W of its eval)
RELEASES = {"camvid": ("camvid", (360, 480)), "siftflow": ("siftflow", (512, 512))}
GOAL_NATIVE_BF16, GOAL_AVX2 = 4.0, 1.5  # default predict / eager fp32 speed
GOAL_MEAN_IU_POINTS, GOAL_AGREEMENT = 0.3, 0.99
# OpenVINO bf16 with planar logits (a reorder ends the graph): the other OpenVINO rows hand
# them over channels-last, as predict does (parsenet.engine.openvino_layout)
PLANAR = "OpenVINO bf16, NCHW logits"
QUICK_SPLIT_AT = "/backbone/conv2/"  # the toy VGG has no measured split point
CALIBRATION_IMAGES = 32  # training images the INT8 row calibrates on (export's default: 100)


def _dataset(name: str, loaded: Any, split: str, folder: Path | None = None) -> Any:
    """The release's ``split`` from shared/data (or ``folder``), or None where that is not
    there."""
    from parsenet.config import config_from_dict, config_to_dict
    from parsenet.recipe import dataset_from_config

    folder = folder or SHARED / RELEASES[name][0]
    if not (folder / "classes.txt").is_file():
        return None
    cfg = config_from_dict(config_to_dict(loaded.config), "release",
                           overrides=[f"data.root={folder}"])
    return dataset_from_config(cfg.data, split, preprocessing=loaded.preprocessing)


def _pairs(dataset: Any, prepare: Any, count: int, size: tuple[int, int] | None) -> list:
    import torch.nn.functional as F

    pairs = []
    for i in np.linspace(0, len(dataset) - 1, count).round().astype(int):
        image, mask = dataset[int(i)]
        x = torch.as_tensor(image)
        x = (prepare(x) if x.dtype == torch.uint8 else x).unsqueeze(0).float()
        mask = torch.as_tensor(mask).to(torch.int64)
        if size is not None:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        pairs.append((x, mask))
    return pairs


def _accuracy(runs: dict[str, Any], pairs: list, options: Any, num_classes: int,
              ignore_index: int) -> dict[str, dict[str, float]]:
    """Per runtime: val mean IU (in %) and the share of pixels labelled as eager fp32."""
    from parsenet.engine.inferencer import Inferencer
    from parsenet.engine.memory import InferenceMemory
    from parsenet.metrics import SegmentationMetrics

    out: dict[str, dict[str, float]] = {}
    reference: list[Tensor] = []
    for name, run in runs.items():
        inferencer = Inferencer(run, num_classes, InferenceMemory(0.0, num_classes), options)
        metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index)
        same = total = 0
        for i, (x, mask) in enumerate(pairs):
            labels = inferencer.labels(x)[0]
            metrics.update(labels, mask)
            if name == "eager fp32":
                reference.append(labels)
            same += int((labels == reference[i]).sum())
            total += labels.numel()
        out[name] = {"mean_iu": 100 * float(metrics.compute()["mean_iou"]),
                     "agreement": same / total}
    return out


def _time(runs: dict[str, Any], x: Tensor, settings: Settings, desc: str
          ) -> dict[str, float]:
    times = interleave({k: (lambda r=r: r(x)) for k, r in runs.items()},
                       min_rounds=settings.min_rounds, max_rounds=settings.max_rounds,
                       budget_s=settings.budget_s, desc=desc)
    return {k: 1000 * median(v) for k, v in times.items()}


def _conv_peak(settings: Settings, tmp: Path) -> dict[str, float]:
    """GFLOP/s of the best runtime per precision on 3x3 convolutions."""
    channels, side = (64, 16) if settings.quick else (256, 56)
    model = conv_stack(channels)
    x = torch.randn(1, channels, side, side)
    flops = 4 * 2 * channels * channels * 9 * side * side
    runs, _, _ = eager_runtimes(model, compile_model=False, sample=x)
    onnx = tmp / "convs.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(onnx), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["logits"])
    calibration = [torch.randn_like(x).numpy() for _ in range(3)]
    exported, _, _ = exported_runtimes(onnx, calibration)
    runs.update(exported)
    ms = _time(runs, x, settings, "conv peak")
    precision = {"eager fp32": "fp32", "channels_last": "fp32", "ONNX Runtime": "fp32",
                 "OpenVINO fp32": "fp32", "eager bf16": "bf16", "OpenVINO bf16": "bf16",
                 "OpenVINO INT8": "int8"}
    peak: dict[str, float] = {}
    for name, t in ms.items():
        kind = precision.get(name)
        if kind:
            peak[kind] = max(peak.get(kind, 0.0), flops / t / 1e6)
    return peak


def _model(name: str, settings: Settings) -> tuple[nn.Module, Any, Path | None]:
    """(model, loaded bundle, the file keying its export cache)."""
    from parsenet.engine.loaded import load_released
    from parsenet.models.released import released

    if settings.quick:
        from parsenet.models import parsenet_vgg16

        loaded = load_released(released(name), "cpu")
        torch.manual_seed(0)
        model = parsenet_vgg16(num_classes=len(loaded.classes), width=0.0625).eval()
        return model, loaded, None
    release = released(name)
    loaded = load_released(release, "cpu")
    return loaded.model, loaded, release.weights_path


def _peers(size: tuple[int, int], settings: Settings, tmp: Path, num_classes: int
           ) -> dict[str, Any]:
    from torchvision.models.segmentation import (
        deeplabv3_mobilenet_v3_large,
        lraspp_mobilenet_v3_large,
    )

    builders = {"lraspp_mobilenet_v3_large": lraspp_mobilenet_v3_large,
                "deeplabv3_mobilenet_v3_large": deeplabv3_mobilenet_v3_large}
    x = torch.randn(1, 3, *size)
    out: dict[str, Any] = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        model = build(weights=None, weights_backbone=None, num_classes=num_classes).eval()
        runs, _, _ = eager_runtimes(model, compile_model=False, sample=x)
        del runs["channels_last"]
        exported, _, _ = exported_runtimes(_static_onnx(model, size, tmp / f"{name}.onnx"), [],
                                           int8=False)
        runs.update(exported)
        gflops = _gflops(lambda b=build: b(weights=None, weights_backbone=None,
                                           num_classes=num_classes), size)
        out[name] = {"gflops": gflops, "ms": _time(runs, x, settings, name)}
    return out


def _gflops(model: Any, size: tuple[int, int]) -> float:
    """GFLOPs of one forward at ``size``: ``model`` a module (counted on a real forward) or
    a builder (counted on the meta device, for free)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if isinstance(model, nn.Module):
        with counter, torch.inference_mode():
            model.eval()(torch.randn(1, 3, *size))
        return counter.get_total_flops() / 1e9
    with torch.device("meta"):
        built = model().eval()
        with counter, torch.no_grad():
            built(torch.randn(1, 3, *size))
    return counter.get_total_flops() / 1e9


def _spread_paths(dataset: Any, count: int) -> list[Path]:
    """The files of ``count`` images spread over ``dataset`` (none without one)."""
    if dataset is None:
        return []
    spread = np.linspace(0, len(dataset) - 1, count).round().astype(int)
    return [dataset.image_path(int(i)) for i in dict.fromkeys(spread)]


def _add_int8(runs: dict[str, Any], skipped: dict[str, str], setup: dict[str, float],
              model: nn.Module, calibration: list[Path], out: Path) -> None:
    """The ``OpenVINO INT8`` row: the IR ``parsenet export --format openvino --int8`` writes
    (the library's :func:`~parsenet.engine.openvino_export.export_openvino_checked`: NNCF on
    the dynamo export, calibrated on ``calibration`` at the images' own size), not a
    quantisation of the traced export the other rows run: NNCF on that one labelled 60.7% of
    camvid's pixels as eager fp32 (docs/PERFORMANCE.md)."""
    from parsenet.engine.export import ExportCheckError

    why_not = int8_unavailable(calibration)
    if why_not:
        skipped["OpenVINO INT8"] = why_not
        return
    from parsenet.engine.backends import OpenVinoPredictor
    from parsenet.engine.openvino_export import export_openvino_checked

    start = time.perf_counter()
    try:
        ir = export_openvino_checked(model, None, None, out, calibration=calibration,
                                     int8=True)
    except ExportCheckError as e:
        skipped["OpenVINO INT8"] = f"the dynamo export is unusable: {e}"
        return
    runs["OpenVINO INT8"] = OpenVinoPredictor(ir["path"], "f32")
    setup["OpenVINO INT8 export and quantisation"] = time.perf_counter() - start


def _one_release(name: str, settings: Settings, tmp: Path, peak: dict[str, float]
                 ) -> tuple[Section, dict[str, Any]]:
    from parsenet.engine.backends import make_predictor
    from parsenet.engine.inferencer import InferenceOptions
    from parsenet.engine.onnx_cache import with_verified_export
    from parsenet.engine.openvino_split import split_point

    model, loaded, key = _model(name, settings)
    size = (64, 96) if settings.quick else RELEASES[name][1]
    count = 2 if settings.quick else settings.released_val_images
    x = torch.randn(1, 3, *size)
    val, train = _dataset(name, loaded, "val"), _dataset(name, loaded, "train")
    resize = size if settings.quick else None
    pairs = _pairs(val, loaded.preprocessing, count, resize) if val is not None else []
    calibration = _spread_paths(train, 4 if settings.quick else CALIBRATION_IMAGES)
    ignore_index = getattr(val, "ignore_index", 255)
    timing_only = os.environ.get("PARSENET_BENCH_TIMING_ONLY") == "1"
    if timing_only:
        pairs = []
    runs, skipped, setup = eager_runtimes(
        model, compile_model=not (settings.quick or timing_only), sample=x)
    onnx = with_verified_export(model, key, tmp if key is None else None,
                                lambda path: _copy(path, tmp / f"{name}.onnx"))
    split_at = split_point(model) or (QUICK_SPLIT_AT if settings.quick else None)
    exported, more, setup2 = exported_runtimes(onnx, [], int8=False, split_at=split_at)
    runs.update(exported)
    skipped.update(more)
    setup.update(setup2)
    if "OpenVINO bf16" in runs:
        from parsenet.engine.backends import OpenVinoPredictor

        runs[PLANAR] = OpenVinoPredictor(onnx, "bf16", logits_layout="NCHW")
    _add_int8(runs, skipped, setup, model, calibration, tmp / f"{name}-int8.xml")
    default, backend = make_predictor(model, backend="auto", checkpoint=key,
                                      cache_dir=tmp if key is None else None)
    runs[f"predict default ({backend})"] = default
    ms = _time(runs, x, settings, name)
    cfg_eval = loaded.config.eval
    options = InferenceOptions.from_eval(cfg_eval)
    if settings.quick:  # the toy input is the whole image
        options = InferenceOptions(mode="whole", preferred="whole")
    # torch.compile recompiles for every new input shape (minutes each on a shared CPU), so
    # it is scored at the timing input only: its agreement with eager fp32 there.
    scored = {k: v for k, v in runs.items() if k != "torch.compile"}
    accuracy = (_accuracy(scored, pairs, options, len(loaded.classes), ignore_index)
                if pairs else {})
    if "torch.compile" in runs:
        same = runs["torch.compile"](x).argmax(1) == runs["eager fp32"](x).argmax(1)
        skipped["torch.compile accuracy"] = (f"recompiles per input shape; agreement with "
                                             f"eager fp32 at the timing input "
                                             f"{float(same.float().mean()):.4f}")
    gflops = _gflops(model, size)
    section = Section(f"released_{name}", f"released model {name} ({type(model).__name__}, "
                                          f"{size[0]}x{size[1]}, {gflops:.2f} GFLOPs)")
    details = {"input": list(size), "gflops": gflops, "ms": ms, "setup_s": setup,
               "skipped": skipped, "accuracy": accuracy, "default_backend": backend,
               "val_images": len(pairs), "calibration_images": len(calibration),
               "int8_from": "dynamo export (parsenet export --format openvino --int8)",
               "eval_mode": options.mode, "num_classes": len(loaded.classes),
               "isa_env": {k: os.environ.get(k) for k in
                           ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "PARSENET_CPU_BF16")}}
    section.details = details
    return section, details


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _rows(section: Section, d: dict[str, Any], peers: dict[str, Any], peak: dict[str, float],
          native_bf16: bool) -> None:
    ms, acc, base = d["ms"], d["accuracy"], d["ms"]["eager fp32"]
    default = next(k for k in ms if k.startswith("predict default"))
    goal = GOAL_NATIVE_BF16 if native_bf16 else GOAL_AVX2
    section.add_goal(f"{default} speed-up over eager fp32", base / ms[default], ">=", goal,
                     fmt="{:.2f}", note=f"{ms[default]:.1f} ms vs {base:.1f} ms")
    precision = {"eager bf16": "bf16", "OpenVINO bf16": "bf16", "OpenVINO bf16 split": "bf16",
                 "OpenVINO INT8": "int8", PLANAR: "bf16"}
    precision[default] = "bf16" if "bf16" in default else "fp32"
    for name in (*RUNTIMES, PLANAR, default):
        if name not in ms:
            section.add(f"{name}", d["skipped"].get(name, "not run"))
            continue
        kind = precision.get(name, "fp32")
        achieved = d["gflops"] / ms[name] * 1e3
        note = (f"{ms[name]:.1f} ms; {achieved:.1f} GFLOP/s = "
                f"{100 * achieved / peak[kind]:.0f}% of the {kind} conv peak"
                if kind in peak else f"{ms[name]:.1f} ms")
        if name in acc:
            a = acc[name]
            note += f"; mean IU {a['mean_iu']:.2f}, agreement {100 * a['agreement']:.2f}%"
        section.add(f"{name} speed-up", base / ms[name], "{:.2f}", note=note)
    # the default, and the runtimes auto picks on CPUs with and without native bf16
    for name in dict.fromkeys((default, "OpenVINO bf16 split", "OpenVINO fp32")):
        if name not in acc:
            continue
        drop = acc["eager fp32"]["mean_iu"] - acc[name]["mean_iu"]
        section.add_goal(f"{name}: mean IU change (points)", abs(drop), "<=",
                         GOAL_MEAN_IU_POINTS, fmt="{:.2f}", note=f"{d['val_images']} val images")
        section.add_goal(f"{name}: pixel agreement with eager fp32", acc[name]["agreement"],
                         ">=", GOAL_AGREEMENT, fmt="{:.4f}")
    runtime = default.split("(")[1].rstrip(")")
    # the peers have no split point: the split runtime is compared with their all-bf16 one
    peer_runtime = {"openvino-bf16": "OpenVINO bf16", "openvino-bf16-split": "OpenVINO bf16",
                    "openvino-f32": "OpenVINO fp32", "onnx": "ONNX Runtime"
                    }.get(runtime, "eager fp32")
    lraspp = peers.get("lraspp_mobilenet_v3_large")
    if lraspp and peer_runtime in lraspp["ms"]:
        ours = ms[peer_runtime] / d["gflops"]
        theirs = lraspp["ms"][peer_runtime] / lraspp["gflops"]
        section.add_goal(f"ms per GFLOP / LR-ASPP's ({peer_runtime})", ours / theirs, "<=", 1.0,
                         fmt="{:.2f}", note=f"ours {ours:.1f}, LR-ASPP {theirs:.1f} ms/GFLOP")


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    from parsenet.engine.precision import cpu_has_native_bf16

    native = cpu_has_native_bf16()
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="parsenet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        peak = _conv_peak(settings, tmp)
        chosen = os.environ.get("PARSENET_BENCH_RELEASES", "")
        names = ("camvid",) if settings.quick else tuple(chosen.split(",")) if chosen else RELEASES
        for name in names:
            section, details = _one_release(name, settings, tmp, peak)
            peers = _peers(tuple(details["input"]), settings, tmp, details["num_classes"])
            details["peers"] = peers
            details["conv_peak_gflops"] = peak
            _rows(section, details, peers, peak, native)
            for peer, p in peers.items():
                best = min(p["ms"], key=p["ms"].get)
                section.add(f"peer {peer}", p["ms"]["eager fp32"], "{:.1f}",
                            note=f"ms eager fp32; {p['gflops']:.2f} GFLOPs; fastest "
                                 f"{best} {p['ms'][best]:.1f} ms")
            sections.append(section)
    return sections
