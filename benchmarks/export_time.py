"""``python -m benchmarks.export_time [--models camvid,siftflow] [--exporters torchscript,dynamo]``:
what the first ``predict`` of a released model pays once, the ONNX export, per exporter.

For each released model and exporter: the CPU time of :func:`parsenet.engine.export.export_onnx`
in this process (``resource.getrusage``: user + system, so other jobs on the cores do not
inflate it, though they slow the wall clock, which is given beside it), then the export's
largest difference from the eager model's logits and the share of pixels labelled alike, at
the sizes of :data:`SIZES` (random images). Prints one line per export and writes JSON
(``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SIZES = ((97, 131), (203, 61), (360, 480), (512, 512))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _agreement(path: Path, model: torch.nn.Module) -> dict[str, float]:
    from parsenet.engine.export import OnnxPredictor

    run = OnnxPredictor(path)
    generator = torch.Generator().manual_seed(0)
    diff, same, total = 0.0, 0, 0
    for h, w in SIZES:
        x = torch.randn(1, 3, h, w, generator=generator)
        with torch.inference_mode():
            expected = model(x)
        got = run(x)
        diff = max(diff, float((got - expected).abs().max()))
        same += int((got.argmax(1) == expected.argmax(1)).sum())
        total += h * w
    return {"max_abs_diff": diff, "agreement": same / total}


def measure(name: str, exporter: str, folder: Path) -> dict[str, Any]:
    from parsenet.engine import load_released
    from parsenet.engine.export import export_onnx
    from parsenet.models.released import released

    model = load_released(released(name), "cpu").model.eval()
    path = folder / f"{name}.{exporter}.onnx"
    cpu, wall = _cpu_seconds(), time.perf_counter()
    used = export_onnx(model, path, exporter=exporter)
    result = {"model": name, "exporter": used, "cpu_s": _cpu_seconds() - cpu,
              "wall_s": time.perf_counter() - wall, "load_at_start": os.getloadavg()[0]}
    return {**result, **_agreement(path, model)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="camvid,siftflow")
    parser.add_argument("--exporters", default="torchscript,dynamo")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="parsenet-export-time-") as tmp:
        for name in args.models.split(","):
            for exporter in args.exporters.split(","):
                row = measure(name, exporter, Path(tmp))
                rows.append(row)
                print(f"{row['model']:9s} {row['exporter']:11s} {row['cpu_s']:6.1f} s CPU "
                      f"{row['wall_s']:7.1f} s wall (load {row['load_at_start']:.1f}); "
                      f"max abs diff {row['max_abs_diff']:.2g}, labels alike "
                      f"{100 * row['agreement']:.3f}%", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"cpu": torch.backends.cpu.get_cpu_capability(),
                                        "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
