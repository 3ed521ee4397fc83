"""``python -m benchmarks.gpu_check [--device cuda] [--tiny] [--out DIR]``: everything a GPU
machine should run, in one go, within 8 minutes.

1. the suite's CUDA-marked tests (``pytest -m cuda``);
2. the released models at their native eval input on the device: eager fp32, bf16 and fp16
   autocast, torch.compile (latency, medians of interleaved rounds);
3. one paper row: ``parsenet study --paper --table 3 --device DEVICE --budget-minutes 4``.

Each step has its own time limit and its output is kept in ``--out`` (default
``runs/gpu_check``) with ``summary.json``. ``--tiny`` (with ``--device cpu``: the suite's dry
run) times a toy model at 64 x 96 without compiling, and lists the study's runs instead of
training them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import interleave, median

REPO = Path(__file__).resolve().parents[1]
# seconds per step: together under the 8 minutes the check is given
LIMITS = {"cuda tests": 90, "latency": 100, "study": 290}
NATIVE = {"camvid": (360, 480), "siftflow": (512, 512)}


def _step(name: str, argv: list[str], out: Path, limit: float) -> dict[str, Any]:
    """Run ``argv`` from the repository, its output into ``out/<name>.log``."""
    log = out / f"{name.replace(' ', '_')}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    with open(log, "w") as f:
        try:
            code = subprocess.run(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=limit, env=env).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return {"command": " ".join(argv), "returncode": code,
            "seconds": round(time.perf_counter() - start, 1), "log": str(log)}


def _models(tiny: bool) -> dict[str, tuple[torch.nn.Module, tuple[int, int]]]:
    from parsenet.engine.loaded import load_released

    if tiny:
        from parsenet.models import parsenet_vgg16

        torch.manual_seed(0)
        return {"toy": (parsenet_vgg16(num_classes=11, width=0.0625), (64, 96))}
    return {name: (load_released(name).model, size) for name, size in NATIVE.items()}


def latency(device: str, tiny: bool) -> dict[str, dict[str, float]]:
    """ms per forward of each model in each precision on ``device``."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    result: dict[str, dict[str, float]] = {}
    for name, (model, size) in _models(tiny).items():
        model = model.to(dev).eval()
        x = torch.randn(1, 3, *size, device=dev)
        variants: dict[str, Any] = {"eager fp32": (model, None), "bf16": (model, torch.bfloat16)}
        if dev.type == "cuda":
            variants["fp16"] = (model, torch.float16)
        if not tiny:
            variants["torch.compile"] = (torch.compile(model), None)

        def call(module: Any, dtype: torch.dtype | None, x: torch.Tensor = x) -> None:
            autocast = (contextlib.nullcontext() if dtype is None
                        else torch.autocast(dev.type, dtype))
            with torch.inference_mode(), autocast:
                module(x)
            sync()

        times = interleave({k: (lambda m=m, d=d: call(m, d)) for k, (m, d) in variants.items()},
                           min_rounds=3 if tiny else 10, max_rounds=3 if tiny else 20,
                           budget_s=20.0)
        result[name] = {k: round(1000 * median(v), 2) for k, v in times.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes, nothing trained")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_check")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available here", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"device": args.device, "tiny": args.tiny,
                               "gpu": (torch.cuda.get_device_name(args.device)
                                       if args.device.startswith("cuda") else None),
                               "torch": torch.__version__}
    python = sys.executable
    summary["cuda tests"] = _step("cuda tests", [python, "-m", "pytest", "-q", "-m", "cuda",
                                                 "tests"], args.out, LIMITS["cuda tests"])
    start = time.perf_counter()
    summary["latency_ms"] = latency(args.device, args.tiny)
    summary["latency_seconds"] = round(time.perf_counter() - start, 1)
    study = [python, "-m", "parsenet.cli", "study", "--paper", "--table", "3", "--device",
             args.device, "--out-root", str(args.out / "study")]
    study += ["--dry-run"] if args.tiny else ["--budget-minutes", "4"]
    summary["study"] = _step("study", study, args.out, LIMITS["study"])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    failed = [k for k in ("cuda tests", "study") if summary[k]["returncode"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
